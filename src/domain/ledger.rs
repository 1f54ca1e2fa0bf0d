//! The double-entry ledger's pure types: accounts, postings and ledger transactions, which can
//! only be built balanced. What each event books is decided in `ledger_book`; storage and the
//! consumer live elsewhere. No I/O here.
//!
//! # Chart of accounts
//!
//! An account is `<kind>:<owner>`, the owner a channel name or a merchant id. Amounts are signed
//! minor units, and a posting's amount is what flows *into* its account: a transaction takes
//! money out of some accounts (negative postings) and into others (positive), summing to zero
//! per currency. A balance is what flowed in less what flowed out.
//!
//! | account | owner | balance means |
//! | --- | --- | --- |
//! | `channel_pending:<channel>` | channel | minus the payments open at the channel (source of holds) |
//! | `merchant_pending:<merchant>` | merchant | the merchant's open holds: payments in flight |
//! | `channel_clearing:<channel>` | channel | minus what the channel collected for paycore and did not pay back (settlement with the channel clears it) |
//! | `merchant_payable:<merchant>` | merchant | what paycore owes the merchant: paid less refunded |
//! | `refunds_payable:<merchant>` | merchant | extra payments on the merchant's orders not yet returned to payers |
//!
//! The channel accounts are the outside world's side (they go negative as money comes in); the
//! merchant accounts hold what paycore owes. Nothing else moves money, so over all accounts
//! every currency sums to zero, and per order `merchant_payable` nets to paid − refunded.
//!
//! # Two phases
//!
//! As TigerBeetle's pending transfers: `order.paying` books a **hold** (channel_pending →
//! merchant_pending) for the order's amount: money that may arrive. It resolves exactly once:
//! `order.paid` **posts** it (one transaction reverses the hold and books channel_clearing →
//! merchant_payable for the applied payment), `order.closed` / `order.failed` **void** it (the
//! reversal alone). Both name the hold they resolve (`resolves`). An order closed or failed
//! without ever paying has no hold, and books nothing.

pub use super::ledger_account::{Account, AccountKind, check_currency};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most postings in one ledger transaction (a post has four: the hold reversed, the payment).
pub const MAX_POSTINGS_PER_TXN: usize = 8;
/// Longest account owner (a merchant id or a channel name), in bytes.
pub const MAX_OWNER_LEN: usize = 64;
/// Longest reference (a channel trade number or a refund id), in bytes.
pub const MAX_REFERENCE_LEN: usize = 128;
/// Most ledger transactions one event books (an `order.extra_payment` books one per new extra
/// payment, at most `MAX_PAYMENTS_PER_ORDER`); keeps the two-digit id suffix sortable.
pub const MAX_TXNS_PER_EVENT: usize = 32;

/// Why a ledger transaction could not be built or an event could not be booked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// A transaction without postings.
    #[error("a ledger transaction needs postings")]
    Empty,
    /// More than [`MAX_POSTINGS_PER_TXN`] postings.
    #[error("a ledger transaction holds at most {MAX_POSTINGS_PER_TXN} postings")]
    TooManyPostings,
    /// One event would book more than [`MAX_TXNS_PER_EVENT`] transactions.
    #[error("one event books at most {MAX_TXNS_PER_EVENT} ledger transactions")]
    TooManyTransactions,
    /// A posting of zero moves nothing and hides mistakes.
    #[error("posting {0} has amount zero")]
    ZeroPosting(usize),
    /// The postings of a currency do not sum to zero.
    #[error("postings in {currency} sum to {sum}, not zero")]
    Unbalanced {
        /// Currency.
        currency: String,
        /// What they sum to.
        sum: i64,
    },
    /// A sum left the i64 range.
    #[error("ledger arithmetic overflowed")]
    Overflow,
    /// Not `<kind>:<owner>` with a known kind.
    #[error("bad account {0:?}")]
    BadAccount(String),
    /// Not three upper-case ASCII letters.
    #[error("bad currency {0:?}")]
    BadCurrency(String),
    /// A malformed id or reference.
    #[error("bad {0}")]
    BadField(&'static str),
    /// The event's `data` is not an order view, or does not match the envelope.
    #[error("event data unusable: {0}")]
    BadData(String),
    /// The event does not carry what its booking needs (no applied payment on `order.paid`,
    /// nothing new on `refund.succeeded`, ...): an error, never a silent zero.
    #[error("event {event_type} cannot be booked: {why}")]
    Missing {
        /// Event type.
        event_type: String,
        /// What is missing.
        why: String,
    },
    /// An event type the ledger does not know.
    #[error("unknown event type {0}")]
    UnknownEvent(String),
}

/// One leg of a ledger transaction: `amount` minor units of `currency` into `account` (out of
/// it when negative).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    /// The account.
    pub account: Account,
    /// ISO 4217 code.
    pub currency: String,
    /// Signed minor units, never zero.
    pub amount: i64,
}

impl Posting {
    /// A posting; the transaction's constructor checks it.
    pub fn new(account: Account, currency: &str, amount: i64) -> Self {
        Self {
            account,
            currency: currency.to_string(),
            amount,
        }
    }

    /// The same posting reversed (checked: `i64::MIN` has no negation).
    pub fn reversed(&self) -> Result<Self, LedgerError> {
        Ok(Self {
            account: self.account.clone(),
            currency: self.currency.clone(),
            amount: self.amount.checked_neg().ok_or(LedgerError::Overflow)?,
        })
    }
}

/// What a ledger transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnKind {
    /// A payment opened at the channel: pending money (`order.paying`).
    Hold,
    /// The payment confirmed: the hold (if any) reversed and the money booked (`order.paid`).
    Post,
    /// The payment will not come: the hold reversed (`order.closed`, `order.failed`).
    Void,
    /// Money given back to the payer from the merchant's payable (`refund.succeeded`).
    Refund,
    /// A payment that could not be applied, owed back to the payer (`order.extra_payment`).
    ExtraPayment,
    /// An extra payment returned (`refund.succeeded` of its automatic refund).
    ExtraRefund,
}

impl TxnKind {
    /// Every kind.
    pub const ALL: [TxnKind; 6] = [
        TxnKind::Hold,
        TxnKind::Post,
        TxnKind::Void,
        TxnKind::Refund,
        TxnKind::ExtraPayment,
        TxnKind::ExtraRefund,
    ];

    /// Its name in storage and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            TxnKind::Hold => "hold",
            TxnKind::Post => "post",
            TxnKind::Void => "void",
            TxnKind::Refund => "refund",
            TxnKind::ExtraPayment => "extra_payment",
            TxnKind::ExtraRefund => "extra_refund",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The id of a ledger transaction: `lt_` + the causing event's id without its `evt_` prefix,
/// and `_<nn>` for the n-th (n ≥ 2) transaction one event books (two digits, so an order's
/// transactions sort in the order booked: event ids are time-ordered). Derived, so a replay of
/// the event names the same transactions.
pub fn txn_id(event_id: &str, index: usize) -> String {
    let base = event_id.strip_prefix("evt_").unwrap_or(event_id);
    if index == 0 {
        format!("lt_{base}")
    } else {
        format!("lt_{base}_{:02}", index + 1)
    }
}

/// The fields of a ledger transaction before its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnParts {
    /// Derived id (see [`txn_id`]).
    pub id: String,
    /// The order.
    pub order_id: String,
    /// Its merchant.
    pub merchant_id: String,
    /// The causing event.
    pub event_id: String,
    /// What it does.
    pub kind: TxnKind,
    /// For a post or void: the hold it resolves.
    pub resolves: Option<String>,
    /// The payment's channel trade number, or the refund's id.
    pub reference: Option<String>,
    /// The legs.
    pub postings: Vec<Posting>,
}

/// A balanced ledger transaction. Only [`LedgerTxn::new`] builds one, so every value of this
/// type has 1..=[`MAX_POSTINGS_PER_TXN`] non-zero postings summing to zero per currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerTxn {
    id: String,
    order_id: String,
    merchant_id: String,
    event_id: String,
    kind: TxnKind,
    resolves: Option<String>,
    reference: Option<String>,
    postings: Vec<Posting>,
}

fn check_text(s: &str, max: usize, what: &'static str) -> Result<(), LedgerError> {
    if s.is_empty() || s.len() > max || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(LedgerError::BadField(what))
    } else {
        Ok(())
    }
}

impl LedgerTxn {
    /// Checks and builds a transaction: refuses an empty or oversized one, a zero posting, a bad
    /// currency, an overflowing sum, and postings that do not sum to zero in every currency.
    pub fn new(p: TxnParts) -> Result<Self, LedgerError> {
        check_text(&p.id, MAX_REFERENCE_LEN, "transaction id")?;
        check_text(&p.order_id, MAX_REFERENCE_LEN, "order id")?;
        check_text(&p.merchant_id, MAX_OWNER_LEN, "merchant id")?;
        check_text(&p.event_id, MAX_REFERENCE_LEN, "event id")?;
        for (r, what) in [(&p.resolves, "resolves"), (&p.reference, "reference")] {
            if let Some(r) = r {
                check_text(r, MAX_REFERENCE_LEN, what)?;
            }
        }
        if p.postings.is_empty() {
            return Err(LedgerError::Empty);
        }
        if p.postings.len() > MAX_POSTINGS_PER_TXN {
            return Err(LedgerError::TooManyPostings);
        }
        let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
        for (i, posting) in p.postings.iter().enumerate() {
            check_currency(&posting.currency)?;
            if posting.amount == 0 {
                return Err(LedgerError::ZeroPosting(i));
            }
            let sum = sums.entry(posting.currency.as_str()).or_insert(0);
            *sum = sum
                .checked_add(posting.amount)
                .ok_or(LedgerError::Overflow)?;
        }
        if let Some((currency, sum)) = sums.into_iter().find(|(_, s)| *s != 0) {
            return Err(LedgerError::Unbalanced {
                currency: currency.to_string(),
                sum,
            });
        }
        Ok(Self {
            id: p.id,
            order_id: p.order_id,
            merchant_id: p.merchant_id,
            event_id: p.event_id,
            kind: p.kind,
            resolves: p.resolves,
            reference: p.reference,
            postings: p.postings,
        })
    }

    /// Derived id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The order.
    pub fn order_id(&self) -> &str {
        &self.order_id
    }
    /// Its merchant.
    pub fn merchant_id(&self) -> &str {
        &self.merchant_id
    }
    /// The causing event.
    pub fn event_id(&self) -> &str {
        &self.event_id
    }
    /// What it does.
    pub fn kind(&self) -> TxnKind {
        self.kind
    }
    /// The hold a post or void resolves.
    pub fn resolves(&self) -> Option<&str> {
        self.resolves.as_deref()
    }
    /// The payment's trade number or the refund's id.
    pub fn reference(&self) -> Option<&str> {
        self.reference.as_deref()
    }
    /// The legs, in order.
    pub fn postings(&self) -> &[Posting] {
        &self.postings
    }

    /// The sum of its postings on accounts of `kind` (in `currency`), checked.
    pub fn net(&self, kind: AccountKind, currency: &str) -> Result<i64, LedgerError> {
        self.postings
            .iter()
            .filter(|p| p.account.kind() == kind && p.currency == currency)
            .try_fold(0i64, |acc, p| {
                acc.checked_add(p.amount).ok_or(LedgerError::Overflow)
            })
    }
}

/// An account's balance snapshot: what flowed in, what flowed out, and the difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountBalance {
    /// The account.
    pub account: Account,
    /// ISO 4217 code.
    pub currency: String,
    /// `inflow - outflow`.
    pub balance: i64,
    /// Sum of its positive postings.
    pub inflow: i64,
    /// Sum of its negative postings, as a positive number.
    pub outflow: i64,
}

/// A merchant's totals in one currency, read off its accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerchantTotals {
    /// ISO 4217 code.
    pub currency: String,
    /// Payments posted: what flowed into `merchant_payable`.
    pub paid: i64,
    /// Refunds of them: what flowed out of `merchant_payable`.
    pub refunded: i64,
    /// What paycore owes the merchant: `merchant_payable`'s balance.
    pub net_payable: i64,
    /// Open holds: `merchant_pending`'s balance.
    pub pending_holds: i64,
    /// Extra payments not returned to payers yet: `refunds_payable`'s balance.
    pub owed_to_payers: i64,
}

/// Per-currency totals of one merchant's account balances.
pub fn merchant_totals(balances: &[AccountBalance]) -> Vec<MerchantTotals> {
    let mut by: BTreeMap<&str, MerchantTotals> = BTreeMap::new();
    for b in balances {
        let t = by
            .entry(b.currency.as_str())
            .or_insert_with(|| MerchantTotals {
                currency: b.currency.clone(),
                ..MerchantTotals::default()
            });
        match b.account.kind() {
            AccountKind::MerchantPayable => {
                t.paid = b.inflow;
                t.refunded = b.outflow;
                t.net_payable = b.balance;
            }
            AccountKind::MerchantPending => t.pending_holds = b.balance,
            AccountKind::RefundsPayable => t.owed_to_payers = b.balance,
            AccountKind::ChannelPending | AccountKind::ChannelClearing => {}
        }
    }
    by.into_values().collect()
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
pub(crate) mod tests;
