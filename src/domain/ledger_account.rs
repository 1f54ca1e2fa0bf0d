//! The accounts of the ledger's chart (see `ledger`'s module doc): `<kind>:<owner>`, built only
//! valid, and the currency codes postings may carry.

use super::ledger::{LedgerError, MAX_OWNER_LEN};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The kinds of account of the chart (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccountKind {
    /// Source of holds, per channel.
    ChannelPending,
    /// A merchant's open holds.
    MerchantPending,
    /// What a channel collected for paycore, per channel.
    ChannelClearing,
    /// What paycore owes a merchant.
    MerchantPayable,
    /// Extra payments on a merchant's orders, owed back to payers.
    RefundsPayable,
}

impl AccountKind {
    /// Every kind.
    pub const ALL: [AccountKind; 5] = [
        AccountKind::ChannelPending,
        AccountKind::MerchantPending,
        AccountKind::ChannelClearing,
        AccountKind::MerchantPayable,
        AccountKind::RefundsPayable,
    ];

    /// The prefix before the colon.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::ChannelPending => "channel_pending",
            AccountKind::MerchantPending => "merchant_pending",
            AccountKind::ChannelClearing => "channel_clearing",
            AccountKind::MerchantPayable => "merchant_payable",
            AccountKind::RefundsPayable => "refunds_payable",
        }
    }

    /// Whether its owner is a merchant (else a channel).
    pub fn merchant_owned(self) -> bool {
        matches!(
            self,
            AccountKind::MerchantPending
                | AccountKind::MerchantPayable
                | AccountKind::RefundsPayable
        )
    }
}

/// An account of the chart: `<kind>:<owner>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Account {
    kind: AccountKind,
    owner: String,
}

impl Account {
    /// An account of `kind` owned by `owner` (a merchant id or channel name: 1..=64 bytes, no
    /// colon, whitespace or control character).
    pub fn new(kind: AccountKind, owner: &str) -> Result<Self, LedgerError> {
        let ok = !owner.is_empty()
            && owner.len() <= MAX_OWNER_LEN
            && !owner
                .chars()
                .any(|c| c == ':' || c.is_whitespace() || c.is_control());
        if !ok {
            return Err(LedgerError::BadAccount(format!(
                "{}:{owner}",
                kind.as_str()
            )));
        }
        Ok(Self {
            kind,
            owner: owner.to_string(),
        })
    }

    /// Parses `<kind>:<owner>`.
    pub fn parse(s: &str) -> Result<Self, LedgerError> {
        let (kind, owner) = s
            .split_once(':')
            .ok_or_else(|| LedgerError::BadAccount(s.to_string()))?;
        let kind = AccountKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| LedgerError::BadAccount(s.to_string()))?;
        Self::new(kind, owner)
    }

    /// Its kind.
    pub fn kind(&self) -> AccountKind {
        self.kind
    }

    /// Its owner.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The merchant owning it, for merchant accounts.
    pub fn merchant(&self) -> Option<&str> {
        self.kind.merchant_owned().then_some(self.owner.as_str())
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.owner)
    }
}

impl TryFrom<String> for Account {
    type Error = LedgerError;
    fn try_from(s: String) -> Result<Self, LedgerError> {
        Self::parse(&s)
    }
}

impl From<Account> for String {
    fn from(a: Account) -> String {
        a.to_string()
    }
}

/// Checks an ISO 4217-shaped code (three upper-case ASCII letters). The ledger books any such
/// currency a channel charged in, including one paycore does not settle (an extra payment in
/// the wrong currency is owed back in that currency).
pub fn check_currency(code: &str) -> Result<(), LedgerError> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(LedgerError::BadCurrency(code.to_string()))
    }
}
