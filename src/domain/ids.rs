//! Identifiers: paycore's own time-ordered ids and the validated strings merchants send us.
//! Everything here is built valid or not at all, so no other module re-checks an id.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest merchant-chosen identifier we accept (merchant order numbers, refund numbers).
pub const MAX_MERCHANT_KEY_LEN: usize = 64;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty, too long or with characters outside `[A-Za-z0-9_-]`.
    #[error("must be 1..={MAX_MERCHANT_KEY_LEN} characters of A-Z, a-z, 0-9, '_' or '-'")]
    MerchantKey,
    /// Not an id paycore issued.
    #[error("not a paycore id")]
    Malformed,
}

/// Crockford base32's digits (upper case, as paycore writes them).
pub(super) const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Each byte's value as one of `CROCKFORD`'s digits, or 0xff.
pub(super) const CROCKFORD_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 32 {
        table[CROCKFORD[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Last (millisecond << 16 | sequence) handed out by this process, so ids made in the same
/// millisecond still sort in the order they were made.
static LAST_TIME_SEQ: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// 26 Crockford base32 characters: 48 bits of milliseconds, a 16-bit in-process sequence, then
/// 64 random bits so that ids from different nodes never collide.
fn time_ordered() -> String {
    String::from_utf8_lossy(&time_ordered_bytes()).into_owned()
}

/// `time_ordered`'s characters, without an allocation.
fn time_ordered_bytes() -> [u8; 26] {
    let now = now_ms() << 16;
    let mut prev = LAST_TIME_SEQ.load(Ordering::Relaxed);
    let stamp = loop {
        let next = now.max(prev + 1);
        match LAST_TIME_SEQ.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => break next,
            Err(actual) => prev = actual,
        }
    };
    let value: u128 = (u128::from(stamp) << 64) | u128::from(rand::random::<u64>());
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 125 - 5 * i as u32;
        *slot = CROCKFORD[((value >> shift) & 0x1f) as usize];
    }
    // 26 * 5 = 130 bits: the two top bits are always zero, the rest is the value.
    out
}

fn is_time_ordered(s: &str) -> bool {
    s.len() == 26 && s.bytes().all(|b| CROCKFORD_VALUE[b as usize] != 0xff)
}

/// JSON as a plain string both ways: serialized from `as_str` (no copy), deserialized through
/// `parse` from the borrowed text (one copy at most, for the types that own a `String`).
macro_rules! serde_as_str {
    ($name:ident) => {
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Text;
                impl serde::de::Visitor<'_> for Text {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        // What serde said when these went through `String`: messages unchanged.
                        f.write_str("a string")
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::parse(s).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Text)
            }
        }
    };
}

/// What every id type has, given its `parse` and `as_str`: conversion from a `String`,
/// display, and JSON as a string.
macro_rules! id_text_impls {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        serde_as_str!($name);
    };
}

/// Conversions and display shared by every id type held in a `String`.
macro_rules! string_id_impls {
    ($name:ident) => {
        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
        id_text_impls!($name);
    };
}

/// Characters of a prefixed id: a 4-character prefix (`ord_`) and 26 of `time_ordered`.
const PREFIXED_LEN: usize = 30;

/// Ids paycore makes: `$prefix` + 26 time-ordered characters, kept inline. They are cloned
/// into every message, cache key and event an order makes, and serialized into every body,
/// so they hold no heap allocation (a `String` made each clone and each serialization
/// allocate; loadtest/ANALYSIS.md).
macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; PREFIXED_LEN]);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn generate() -> Self {
                let mut text = [0u8; PREFIXED_LEN];
                text[..4].copy_from_slice($prefix.as_bytes());
                text[4..].copy_from_slice(&time_ordered_bytes());
                Self(text)
            }
            /// Parses an id this service issued.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                match s.strip_prefix($prefix) {
                    Some(rest) if is_time_ordered(rest) => {
                        let mut text = [0u8; PREFIXED_LEN];
                        text.copy_from_slice(s.as_bytes());
                        Ok(Self(text))
                    }
                    _ => Err(IdError::Malformed),
                }
            }
            /// The id as text.
            pub fn as_str(&self) -> &str {
                // Built only from ASCII (the prefix and Crockford digits), so this never fails.
                std::str::from_utf8(&self.0).unwrap_or_default()
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.as_str().to_string()
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.as_str()).finish()
            }
        }
        id_text_impls!($name);
    };
}

prefixed_id!(
    /// An order's id: opaque to merchants, sorts by creation time.
    OrderId,
    "ord_"
);
prefixed_id!(
    /// The serial number of one payment attempt at a channel.
    PaySerialNo,
    "pay_"
);
/// A one-time submit token: signed (see `submit_token`), or of the older form a store keeps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubmitToken(String);

impl SubmitToken {
    /// A fresh token of the stored form (`tok_` + a time-ordered id). Tokens are issued signed
    /// (`TokenKey::issue`); this form is what a paycore before signed tokens stored, and what
    /// tests of that path make.
    pub fn generate() -> Self {
        Self(format!("tok_{}", time_ordered()))
    }
    /// A time-ordered id, the first part of a signed token.
    pub(super) fn generate_id() -> String {
        time_ordered()
    }
    /// Text `submit_token` built in the signed form.
    pub(super) fn from_checked(text: String) -> Self {
        Self(text)
    }
    /// Parses a token of either form (its signature is not checked here).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        match s.strip_prefix("tok_") {
            Some(rest) if is_time_ordered(rest) || super::submit_token::is_signed_shape(rest) => {
                Ok(Self(s.to_string()))
            }
            _ => Err(IdError::Malformed),
        }
    }
}
string_id_impls!(SubmitToken);
prefixed_id!(
    /// An event's id (unique across the system).
    EventId,
    "evt_"
);

prefixed_id!(
    /// A merchant notification's id: `ntf_` + its event id's 26 characters (see `for_event`).
    NotificationId,
    "ntf_"
);

impl NotificationId {
    /// The notification of an event. Derived, never random: reading the same event again (a
    /// restart before the consumer's cursor moved) names the same notification, so enqueueing
    /// it twice stores it once, and merchants see one stable id on every attempt.
    pub fn for_event(event_id: &EventId) -> Self {
        let mut text = event_id.0;
        text[..4].copy_from_slice(b"ntf_");
        Self(text)
    }
}

macro_rules! merchant_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Parses a merchant-chosen key: 1..=64 of `[A-Za-z0-9_-]`.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                let ok = !s.is_empty()
                    && s.len() <= MAX_MERCHANT_KEY_LEN
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if ok { Ok(Self(s.to_string())) } else { Err(IdError::MerchantKey) }
            }
        }
        string_id_impls!($name);
    };
}

merchant_key!(
    /// A merchant's id, as configured.
    MerchantId
);
merchant_key!(
    /// The merchant's own number for an order; unique per merchant.
    MerchantOrderNo
);
merchant_key!(
    /// The merchant's own number for a refund; unique per order, the refund's idempotency key.
    RefundNo
);
merchant_key!(
    /// A gateway's id for one Kafka command; with the merchant id, the command's idempotency
    /// key (its reply is keyed by it).
    RequestId
);

/// A refund's id: `rfd_` + the order id's 26 characters + `_` + the refund's position on the
/// order (1-based). Derived, never random: it is chosen before the first attempt at the channel
/// (it is the channel's out_refund_no), the same on every retry, and it names its order, so a
/// refund is found without a global index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RefundId(String);

impl RefundId {
    /// The id of the `position`-th refund (1-based) of an order.
    pub fn new(order_id: &OrderId, position: usize) -> Self {
        let tail = order_id.as_str().trim_start_matches("ord_");
        Self(format!("rfd_{tail}_{position}"))
    }

    /// Parses a refund id this service issued.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let rest = s.strip_prefix("rfd_").ok_or(IdError::Malformed)?;
        let (order, position) = rest.split_once('_').ok_or(IdError::Malformed)?;
        let ok = is_time_ordered(order)
            && !position.is_empty()
            && position.len() <= 4
            && !position.starts_with('0')
            && position.bytes().all(|b| b.is_ascii_digit());
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(IdError::Malformed)
        }
    }

    /// The order this refund belongs to.
    pub fn order_id(&self) -> OrderId {
        let mut text = [0u8; PREFIXED_LEN];
        text[..4].copy_from_slice(b"ord_");
        text[4..].copy_from_slice(&self.0.as_bytes()["rfd_".len().."rfd_".len() + 26]);
        OrderId(text)
    }
}
string_id_impls!(RefundId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_sort_in_creation_order() {
        let ids: Vec<OrderId> = (0..2000).map(|_| OrderId::generate()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        }
        for id in &ids {
            assert_eq!(OrderId::parse(id.as_str()).as_ref(), Ok(id));
        }
    }

    #[test]
    fn foreign_ids_are_refused() {
        for bad in [
            "",
            "ord_",
            "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "ord_01arz3ndektsv4rrffq69g5fav",
            "ord_01ARZ3NDEKTSV4RRFFQ69G5FA",
        ] {
            assert_eq!(OrderId::parse(bad), Err(IdError::Malformed), "{bad}");
        }
        assert!(OrderId::parse("ord_01ARZ3NDEKTSV4RRFFQ69G5FAV").is_ok());
    }

    #[test]
    fn a_notification_id_is_derived_from_its_event() {
        let event = EventId::generate();
        let id = NotificationId::for_event(&event);
        assert_eq!(id, NotificationId::for_event(&event));
        assert_eq!(&id.as_str()[4..], &event.as_str()[4..]);
        assert_eq!(NotificationId::parse(id.as_str()).as_ref(), Ok(&id));
        assert!(NotificationId::parse(event.as_str()).is_err());
    }

    #[test]
    fn refund_ids_name_their_order() {
        let order = OrderId::generate();
        let id = RefundId::new(&order, 12);
        assert_eq!(RefundId::parse(id.as_str()).as_ref(), Ok(&id));
        assert_eq!(id.order_id(), order);
        assert!(id.as_str().ends_with("_12"));
        for bad in [
            "",
            "rfd_",
            "rfd_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "rfd_01ARZ3NDEKTSV4RRFFQ69G5FAV_",
            "rfd_01ARZ3NDEKTSV4RRFFQ69G5FAV_0",
            "rfd_01ARZ3NDEKTSV4RRFFQ69G5FAV_01",
            "rfd_01ARZ3NDEKTSV4RRFFQ69G5FAV_x",
            "rfd_01ARZ3NDEKTSV4RRFFQ69G5FAV_12345",
            "rfd_01arz3ndektsv4rrffq69g5fav_1",
            "ord_01ARZ3NDEKTSV4RRFFQ69G5FAV_1",
        ] {
            assert_eq!(RefundId::parse(bad), Err(IdError::Malformed), "{bad}");
        }
    }

    #[test]
    fn ids_are_json_strings_both_ways_and_a_foreign_one_is_refused_by_name() {
        let id = OrderId::generate();
        let text = serde_json::to_string(&id).unwrap();
        assert_eq!(text, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<OrderId>(&text).unwrap(), id);
        // From an owned string too (as a `Value` hands it over).
        let value = serde_json::Value::String(id.to_string());
        assert_eq!(serde_json::from_value::<OrderId>(value).unwrap(), id);
        for bad in [
            "\"pay_01J00000000000000000000000\"",
            "\"ord_short\"",
            "7",
            "null",
        ] {
            let err = serde_json::from_str::<OrderId>(bad)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("not a paycore id") || err.contains("expected a string"),
                "{bad}: {err}"
            );
        }
        assert_eq!(format!("{id:?}"), format!("OrderId({:?})", id.as_str()));
        assert_eq!(String::from(id.clone()), id.as_str());
    }

    #[test]
    fn merchant_keys() {
        assert!(MerchantOrderNo::parse("A-1_b").is_ok());
        assert!(MerchantOrderNo::parse(&"x".repeat(64)).is_ok());
        for bad in ["", "a b", "ü", "a/b", "a\n"] {
            assert_eq!(
                MerchantOrderNo::parse(bad),
                Err(IdError::MerchantKey),
                "{bad:?}"
            );
        }
        assert_eq!(
            MerchantOrderNo::parse(&"x".repeat(65)),
            Err(IdError::MerchantKey)
        );
    }
}
