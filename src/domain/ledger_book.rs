//! What each event books in the ledger: a pure function of the event (its type and its `data`,
//! the order's view after the change) and of what the order's ledger already holds
//! ([`OrderBook`], folded from its earlier transactions). Chart and two phases: see `ledger`.
//!
//! Why the order's book and not the event alone: the view says where the order *is*, not what
//! happened to its money before. A CLOSED view looks the same whether the order was PAYING (a
//! hold to void) or only had a pay intent recorded (no hold); a view's `refunded_amount` is a
//! running total, so the refund an event settled is that total less what is booked already; and
//! the extra payments new in an event are those not booked yet. Folding the order's own
//! transactions answers all three exactly, and replaying the same events on the same book gives
//! the same transactions, with the same derived ids.
//!
//! | event | books |
//! | --- | --- |
//! | `order.paying` | hold: channel_pending −amount, merchant_pending +amount |
//! | `order.paid` | post: the open hold reversed (if any), channel_clearing −paid, merchant_payable +paid |
//! | `order.closed`, `order.failed` | void: the open hold reversed; nothing without one |
//! | `order.extra_payment` | per new extra payment: channel_clearing −x, refunds_payable +x |
//! | `refund.succeeded` | refund: merchant_payable −r, channel_clearing +r (r = refunded total less booked); per extra refund newly SUCCEEDED: refunds_payable −x, channel_clearing +x |
//! | `order.created`, `order.fulfilled`, `order.fulfillment_failed`, `refund.failed` | nothing: no money moves (a given-up fulfillment's refund is booked when it succeeds; a failed refund moved nothing) |

use super::event::Event;
use super::ledger::{
    Account, AccountKind, LedgerError, LedgerTxn, MAX_TXNS_PER_EVENT, Posting, TxnKind, TxnParts,
    txn_id,
};
use super::view::OrderView;
use std::collections::BTreeSet;

/// Event types that move no money and book nothing: a given-up fulfillment's refund is booked
/// when it succeeds, a failed refund moved nothing. The consumer loads no book for them.
pub const NO_MONEY_EVENTS: &[&str] = &[
    "order.created",
    "order.fulfilled",
    "order.fulfillment_failed",
    "refund.failed",
];

/// A hold not yet posted or voided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenHold {
    /// The hold's transaction id.
    pub txn_id: String,
    /// Its postings, reversed by the post or void that resolves it.
    pub postings: Vec<Posting>,
}

/// What one order's ledger holds so far, folded from its transactions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderBook {
    /// The hold waiting for its post or void.
    pub open_hold: Option<OpenHold>,
    /// Whether the order's payment is posted.
    pub posted: bool,
    /// Refunds of the order's payment booked, minor units (off merchant_payable).
    pub refunded: i64,
    /// Channel trade numbers of the extra payments booked.
    pub extras: BTreeSet<String>,
    /// Refund ids of the extra payments' refunds booked.
    pub extra_refunds: BTreeSet<String>,
}

impl OrderBook {
    /// The book of an order from its transactions, in any order: holds are folded in before
    /// the posts and voids that resolve them.
    pub fn from_transactions<'a>(
        txns: impl IntoIterator<Item = &'a LedgerTxn> + Clone,
    ) -> Result<Self, LedgerError> {
        let mut book = Self::default();
        let is_hold = |t: &&LedgerTxn| t.kind() == TxnKind::Hold;
        for t in txns.clone().into_iter().filter(is_hold) {
            book.record(t)?;
        }
        for t in txns.into_iter().filter(|t| !is_hold(t)) {
            book.record(t)?;
        }
        Ok(book)
    }

    /// Folds one booked transaction in.
    pub fn record(&mut self, t: &LedgerTxn) -> Result<(), LedgerError> {
        match t.kind() {
            TxnKind::Hold => {
                self.open_hold = Some(OpenHold {
                    txn_id: t.id().to_string(),
                    postings: t.postings().to_vec(),
                });
            }
            TxnKind::Post | TxnKind::Void => {
                if t.kind() == TxnKind::Post {
                    self.posted = true;
                }
                if self.open_hold.as_ref().map(|h| h.txn_id.as_str()) == t.resolves() {
                    self.open_hold = None;
                }
            }
            TxnKind::Refund => {
                // Every refund posting on merchant_payable is an outflow, in the order's currency.
                for p in t.postings() {
                    if p.account.kind() == AccountKind::MerchantPayable {
                        self.refunded = p
                            .amount
                            .checked_neg()
                            .and_then(|out| self.refunded.checked_add(out))
                            .ok_or(LedgerError::Overflow)?;
                    }
                }
            }
            TxnKind::ExtraPayment => {
                self.extras.extend(t.reference().map(str::to_string));
            }
            TxnKind::ExtraRefund => {
                self.extra_refunds.extend(t.reference().map(str::to_string));
            }
        }
        Ok(())
    }
}

/// The transactions being built for one event, numbered for their ids.
struct Builder<'a> {
    event: &'a Event,
    out: Vec<LedgerTxn>,
}

impl Builder<'_> {
    fn push(
        &mut self,
        kind: TxnKind,
        resolves: Option<String>,
        reference: Option<String>,
        postings: Vec<Posting>,
    ) -> Result<(), LedgerError> {
        if self.out.len() >= MAX_TXNS_PER_EVENT {
            return Err(LedgerError::TooManyTransactions);
        }
        let txn = LedgerTxn::new(TxnParts {
            id: txn_id(self.event.event_id.as_str(), self.out.len()),
            order_id: self.event.order_id.clone(),
            merchant_id: self.event.merchant_id.clone(),
            event_id: self.event.event_id.to_string(),
            kind,
            resolves,
            reference,
            postings,
        })?;
        self.out.push(txn);
        Ok(())
    }
}

fn missing(event: &Event, why: impl Into<String>) -> LedgerError {
    LedgerError::Missing {
        event_type: event.event_type.clone(),
        why: why.into(),
    }
}

fn positive(event: &Event, amount: i64, what: &str) -> Result<i64, LedgerError> {
    if amount > 0 {
        Ok(amount)
    } else {
        Err(missing(event, format!("{what} is {amount}, not positive")))
    }
}

/// What `event` books, given what its order's ledger holds (`prior`). Zero or more balanced
/// transactions, with ids derived from the event; an event that lacks what its booking needs is
/// an error. Fold the result into the book (`OrderBook::record`) before the order's next event.
pub fn book(event: &Event, prior: &OrderBook) -> Result<Vec<LedgerTxn>, LedgerError> {
    // Read in place: `&Value` is a deserializer, no copy of the view is made.
    let v = event
        .data
        .parse::<OrderView>()
        .map_err(|e| LedgerError::BadData(e.to_string()))?;
    if v.order_id != event.order_id || v.merchant_id != event.merchant_id {
        return Err(LedgerError::BadData(
            "the view's order or merchant differs from the envelope's".into(),
        ));
    }
    let merchant = v.merchant_id.as_str();
    let channel = v.channel.as_str();
    let acct = |kind: AccountKind| -> Result<Account, LedgerError> {
        Account::new(
            kind,
            if kind.merchant_owned() {
                merchant
            } else {
                channel
            },
        )
    };
    let mut b = Builder {
        event,
        out: Vec::new(),
    };
    match event.event_type.as_str() {
        t if NO_MONEY_EVENTS.contains(&t) => {}
        "order.paying" => {
            if let Some(h) = &prior.open_hold {
                return Err(missing(event, format!("hold {} is open already", h.txn_id)));
            }
            if prior.posted {
                return Err(missing(event, "the order's payment is posted already"));
            }
            let amount = positive(event, v.amount, "the order amount")?;
            let neg = amount.checked_neg().ok_or(LedgerError::Overflow)?;
            b.push(
                TxnKind::Hold,
                None,
                v.pay_serial_no.clone(),
                vec![
                    Posting::new(acct(AccountKind::ChannelPending)?, &v.currency, neg),
                    Posting::new(acct(AccountKind::MerchantPending)?, &v.currency, amount),
                ],
            )?;
        }
        "order.paid" => {
            if prior.posted {
                return Err(missing(event, "the order's payment is posted already"));
            }
            let mut applied = v.payments.iter().filter(|p| p.role == "APPLIED");
            let (Some(payment), None) = (applied.next(), applied.next()) else {
                return Err(missing(event, "not exactly one APPLIED payment"));
            };
            let paid = positive(event, payment.amount, "the applied payment")?;
            let mut postings = match &prior.open_hold {
                Some(h) => h
                    .postings
                    .iter()
                    .map(Posting::reversed)
                    .collect::<Result<Vec<_>, _>>()?,
                None => Vec::new(),
            };
            postings.push(Posting::new(
                acct(AccountKind::ChannelClearing)?,
                &payment.currency,
                paid.checked_neg().ok_or(LedgerError::Overflow)?,
            ));
            postings.push(Posting::new(
                acct(AccountKind::MerchantPayable)?,
                &payment.currency,
                paid,
            ));
            b.push(
                TxnKind::Post,
                prior.open_hold.as_ref().map(|h| h.txn_id.clone()),
                Some(payment.channel_trade_no.clone()),
                postings,
            )?;
        }
        "order.closed" | "order.failed" => {
            if let Some(h) = &prior.open_hold {
                let postings = h
                    .postings
                    .iter()
                    .map(Posting::reversed)
                    .collect::<Result<Vec<_>, _>>()?;
                b.push(
                    TxnKind::Void,
                    Some(h.txn_id.clone()),
                    v.pay_serial_no.clone(),
                    postings,
                )?;
            }
        }
        "order.extra_payment" => {
            for p in v
                .payments
                .iter()
                .filter(|p| p.role == "EXTRA" && !prior.extras.contains(&p.channel_trade_no))
            {
                let x = positive(event, p.amount, "an extra payment")?;
                b.push(
                    TxnKind::ExtraPayment,
                    None,
                    Some(p.channel_trade_no.clone()),
                    vec![
                        Posting::new(
                            acct(AccountKind::ChannelClearing)?,
                            &p.currency,
                            x.checked_neg().ok_or(LedgerError::Overflow)?,
                        ),
                        Posting::new(acct(AccountKind::RefundsPayable)?, &p.currency, x),
                    ],
                )?;
            }
            if b.out.is_empty() {
                return Err(missing(
                    event,
                    "no extra payment that is not booked already",
                ));
            }
        }
        "refund.succeeded" => {
            let r = v
                .refunded_amount
                .checked_sub(prior.refunded)
                .ok_or(LedgerError::Overflow)?;
            if r < 0 {
                return Err(missing(
                    event,
                    format!(
                        "refunded_amount {} is below the {} booked",
                        v.refunded_amount, prior.refunded
                    ),
                ));
            }
            if r > 0 {
                b.push(
                    TxnKind::Refund,
                    None,
                    None,
                    vec![
                        Posting::new(
                            acct(AccountKind::MerchantPayable)?,
                            &v.currency,
                            r.checked_neg().ok_or(LedgerError::Overflow)?,
                        ),
                        Posting::new(acct(AccountKind::ChannelClearing)?, &v.currency, r),
                    ],
                )?;
            }
            for p in v.payments.iter().filter(|p| p.role == "EXTRA") {
                let (Some(refund_id), Some("SUCCEEDED")) =
                    (p.refund_id.as_ref(), p.refund_status.as_deref())
                else {
                    continue;
                };
                if prior.extra_refunds.contains(refund_id) {
                    continue;
                }
                let x = positive(event, p.amount, "an extra payment")?;
                b.push(
                    TxnKind::ExtraRefund,
                    None,
                    Some(refund_id.clone()),
                    vec![
                        Posting::new(
                            acct(AccountKind::RefundsPayable)?,
                            &p.currency,
                            x.checked_neg().ok_or(LedgerError::Overflow)?,
                        ),
                        Posting::new(acct(AccountKind::ChannelClearing)?, &p.currency, x),
                    ],
                )?;
            }
            if b.out.is_empty() {
                return Err(missing(
                    event,
                    "no succeeded refund that is not booked already",
                ));
            }
        }
        other => return Err(LedgerError::UnknownEvent(other.to_string())),
    }
    Ok(b.out)
}
