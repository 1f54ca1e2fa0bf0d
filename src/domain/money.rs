//! Money as integer minor units (fen for CNY). Owns the only way to build an amount or a currency;
//! it never holds a float and every sum is checked.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest amount one order may carry: 10 billion minor units (100 million yuan). Far above
/// any utility bill, far below `i64::MAX`, so sums of a few amounts cannot overflow silently.
pub const MAX_AMOUNT: i64 = 10_000_000_000;

/// A positive amount of money in minor units, at most [`MAX_AMOUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Amount(i64);

/// Why an amount or currency was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Zero or negative.
    #[error("amount must be a positive integer number of minor units")]
    NotPositive,
    /// Above [`MAX_AMOUNT`].
    #[error("amount must be at most {MAX_AMOUNT} minor units")]
    TooLarge,
    /// A checked sum or difference left the allowed range.
    #[error("amount arithmetic overflowed")]
    Overflow,
    /// Not three upper-case ASCII letters, or not one we settle in.
    #[error("currency must be an ISO 4217 code paycore settles in (CNY)")]
    Currency,
}

impl Amount {
    /// Builds an amount from minor units, refusing zero, negatives and values over the cap.
    pub fn new(minor_units: i64) -> Result<Self, MoneyError> {
        if minor_units <= 0 {
            Err(MoneyError::NotPositive)
        } else if minor_units > MAX_AMOUNT {
            Err(MoneyError::TooLarge)
        } else {
            Ok(Self(minor_units))
        }
    }

    /// The amount in minor units.
    pub fn minor_units(self) -> i64 {
        self.0
    }

    /// Checked sum; `Overflow` when the result leaves the allowed range.
    pub fn checked_add(self, other: Amount) -> Result<Amount, MoneyError> {
        let sum = self.0.checked_add(other.0).ok_or(MoneyError::Overflow)?;
        Amount::new(sum).map_err(|_| MoneyError::Overflow)
    }
}

impl TryFrom<i64> for Amount {
    type Error = MoneyError;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        Amount::new(v)
    }
}

impl From<Amount> for i64 {
    fn from(a: Amount) -> i64 {
        a.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An ISO 4217 currency code that paycore settles in. Today that is CNY only: the channels our
/// utilities use settle in yuan, and accepting a code we cannot settle would be a silent lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Currency {
    /// Chinese yuan; minor unit fen.
    #[default]
    Cny,
}

impl Currency {
    /// The ISO 4217 code.
    pub fn code(self) -> &'static str {
        match self {
            Currency::Cny => "CNY",
        }
    }

    /// Parses an ISO code (exact, upper case).
    pub fn parse(s: &str) -> Result<Self, MoneyError> {
        match s {
            "CNY" => Ok(Currency::Cny),
            _ => Err(MoneyError::Currency),
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Currency::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn amount_bounds() {
        assert_eq!(Amount::new(0), Err(MoneyError::NotPositive));
        assert_eq!(Amount::new(-1), Err(MoneyError::NotPositive));
        assert_eq!(Amount::new(1).map(Amount::minor_units), Ok(1));
        assert_eq!(
            Amount::new(MAX_AMOUNT).map(Amount::minor_units),
            Ok(MAX_AMOUNT)
        );
        assert_eq!(Amount::new(MAX_AMOUNT + 1), Err(MoneyError::TooLarge));
        assert_eq!(Amount::new(i64::MIN), Err(MoneyError::NotPositive));
    }

    #[test]
    fn amount_serde_refuses_invalid() {
        assert!(serde_json::from_str::<Amount>("0").is_err());
        assert!(serde_json::from_str::<Amount>("1.5").is_err());
        assert!(serde_json::from_str::<Amount>("\"100\"").is_err());
        assert_eq!(
            serde_json::from_str::<Amount>("100").ok(),
            Amount::new(100).ok()
        );
    }

    #[test]
    fn currency_parse() {
        assert_eq!(Currency::parse("CNY"), Ok(Currency::Cny));
        assert_eq!(Currency::parse("cny"), Err(MoneyError::Currency));
        assert_eq!(Currency::parse("USD"), Err(MoneyError::Currency));
        assert_eq!(Currency::parse(""), Err(MoneyError::Currency));
    }

    proptest! {
        #[test]
        fn checked_add_never_exceeds_cap(a in 1i64..=MAX_AMOUNT, b in 1i64..=MAX_AMOUNT) {
            let (a, b) = (Amount::new(a).unwrap(), Amount::new(b).unwrap());
            match a.checked_add(b) {
                Ok(s) => prop_assert_eq!(s.minor_units(), a.minor_units() + b.minor_units()),
                Err(e) => {
                    prop_assert_eq!(e, MoneyError::Overflow);
                    prop_assert!(a.minor_units() + b.minor_units() > MAX_AMOUNT);
                }
            }
        }
    }
}
