//! The wire protocol of the simulated biller, shared by the simulator and paycore's client:
//! the signature scheme (HMAC-SHA256 over timestamp and raw body), the paths, the request and
//! response bodies, and the error codes with their HTTP statuses. It depends on serde and the
//! HMAC primitives only, and never on the server.
//!
//! Endpoints (all bodies JSON; requests over [`MAX_BODY_BYTES`] answer 413):
//!
//! | method and path                                   | signed | answer                      |
//! |---------------------------------------------------|--------|-----------------------------|
//! | `POST {WRITE_OFFS_PATH}`                          | yes    | [`WriteOffView`]            |
//! | `POST {WRITE_OFFS_PATH}/{order_id}/reversals`     | yes    | [`ReversalView`]            |
//! | `GET {WRITE_OFFS_PATH}/{order_id}`                | yes    | [`WriteOffView`] or 404     |
//! | `GET {WRITE_OFFS_PATH}?order_id=X`                | no     | [`AuditView`] (audit)       |
//!
//! Every non-2xx answer carries an [`ErrorBody`].

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Header carrying the hex HMAC-SHA256 signature of a request.
pub const SIGNATURE_HEADER: &str = "X-Biller-Signature";
/// Header carrying the signing time, unix seconds in decimal.
pub const TIMESTAMP_HEADER: &str = "X-Biller-Timestamp";
/// Largest accepted distance, in seconds, between a request's timestamp and the biller's clock.
pub const MAX_TIMESTAMP_SKEW_SECS: u64 = 300;
/// Largest accepted request body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest accepted identifier or name field, in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Longest accepted reversal reason, in bytes.
pub const MAX_REASON_LEN: usize = 256;
/// Path of write-off (POST, signed) and of the audit (GET, unsigned).
pub const WRITE_OFFS_PATH: &str = "/biller/v1/write-offs";

/// Code of a 401: missing or bad signature, or stale timestamp. Nothing changed.
pub const SIGN_ERROR: &str = "SIGN_ERROR";
/// Code of a 400 (malformed or invalid request), 413 (body too large) or 405 (wrong method).
pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
/// Code of a 404: no such write-off, or no such route.
pub const NOT_FOUND: &str = "NOT_FOUND";
/// Code of a 409: the order_id was written off with a different amount or currency, or the
/// reversal_id was used for a different reversal (another amount or order).
pub const CONFLICT: &str = "CONFLICT";
/// Code of a 422: the reversals would exceed the written-off amount.
pub const EXCEEDS: &str = "EXCEEDS";
/// Code of a 422: the biller refuses the write-off for good (e.g. a closed account); retrying
/// cannot help.
pub const ACCOUNT_INVALID: &str = "ACCOUNT_INVALID";
/// Code of a 409: the biller refuses the reversal (e.g. the credit was already consumed).
pub const REVERSAL_REFUSED: &str = "REVERSAL_REFUSED";
/// Code of a 503: the biller failed internally. Usually nothing was recorded, but the answer
/// may have been lost after recording, so a client asks (GET the write-off) before it retries
/// or gives up.
pub const SYSTEM_ERROR: &str = "SYSTEM_ERROR";
/// Code of a 503: a record capacity of the simulator is reached; nothing was recorded.
pub const CAPACITY: &str = "CAPACITY";

type HmacSha256 = Hmac<Sha256>;

fn keyed_mac(secret: &[u8], target: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(format!("{target}\n{timestamp}\n").as_bytes());
    mac.update(body);
    mac
}

/// hex(HMAC-SHA256(secret, "{METHOD} {path and query}\n{timestamp}\n" followed by the raw
/// body)); GETs sign an empty body. `target` is e.g. `POST /biller/v1/write-offs`: a signed
/// request cannot be replayed against another order's path.
pub fn sign(secret: &[u8], target: &str, timestamp: i64, body: &[u8]) -> String {
    hex::encode(
        keyed_mac(secret, target, timestamp, body)
            .finalize()
            .into_bytes(),
    )
}

/// Constant-time check of a hex signature (either case); false on bad hex or wrong length.
pub fn verify(
    secret: &[u8],
    target: &str,
    timestamp: i64,
    body: &[u8],
    signature_hex: &str,
) -> bool {
    match hex::decode(signature_hex) {
        Ok(tag) => keyed_mac(secret, target, timestamp, body)
            .verify_slice(&tag)
            .is_ok(),
        Err(_) => false,
    }
}

/// Whether `timestamp` (unix seconds) lies within [`MAX_TIMESTAMP_SKEW_SECS`] of `now`.
pub fn timestamp_fresh(timestamp: i64, now: i64) -> bool {
    // abs_diff cannot overflow, whatever the two values (i64::MIN and i64::MAX included).
    now.abs_diff(timestamp) <= MAX_TIMESTAMP_SKEW_SECS
}

/// Path of one order's write-off (GET, signed). `order_id` is URL-unreserved by the rules below.
pub fn write_off_path(order_id: &str) -> String {
    format!("{WRITE_OFFS_PATH}/{order_id}")
}

/// Path of one order's reversals (POST, signed).
pub fn reversals_path(order_id: &str) -> String {
    format!("{WRITE_OFFS_PATH}/{order_id}/reversals")
}

/// Body of `POST /biller/v1/write-offs`: credit a paid order to the customer's account.
///
/// Identifiers (`order_id`, `merchant_id`, `merchant_order_no`, `business_type`) have 1 to
/// [`MAX_ID_LEN`] bytes of URL-unreserved ASCII (`A-Z a-z 0-9 - . _ ~`); `currency` is three
/// upper-case letters. Unknown fields are refused, so a misspelled field fails loudly in tests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WriteOffRequest {
    /// paycore's order id; the write-off is idempotent on it.
    pub order_id: String,
    pub merchant_id: String,
    pub merchant_order_no: String,
    /// Integer minor units (fen), > 0.
    pub amount: i64,
    pub currency: String,
    /// What the payment is for at the utility (e.g. "GAS", "WATER").
    pub business_type: String,
}

/// State of a write-off at the biller.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WriteOffStatus {
    /// Credited, nothing reversed.
    Applied,
    /// Some of the credit reversed.
    PartlyReversed,
    /// All of the credit reversed.
    Reversed,
}

/// A write-off as the biller shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WriteOffView {
    /// The biller's own id of the credit.
    pub write_off_id: String,
    pub order_id: String,
    pub merchant_id: String,
    pub amount: i64,
    pub currency: String,
    /// Sum of the reversals so far; never above `amount`.
    pub reversed_amount: i64,
    pub status: WriteOffStatus,
    /// RFC 3339 UTC.
    pub applied_at: String,
}

/// Body of `POST /biller/v1/write-offs/{order_id}/reversals`: take back part of a credit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReverseRequest {
    /// Unique across the biller (same rules as order_id): a repeat with the same id and amount
    /// is the same reversal.
    pub reversal_id: String,
    /// Integer minor units, > 0.
    pub amount: i64,
    /// Free text of at most [`MAX_REASON_LEN`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A reversal as the biller shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReversalView {
    pub reversal_id: String,
    pub order_id: String,
    pub amount: i64,
    /// RFC 3339 UTC.
    pub reversed_at: String,
}

/// `GET /biller/v1/write-offs?order_id=X`: everything the biller did for that order; empty
/// lists and 0 attempts for an unknown order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditView {
    pub order_id: String,
    /// Well-formed, correctly signed write-off calls received for this order, whatever they
    /// were answered (injected failures, conflicts and idempotent repeats included).
    pub attempts: u64,
    /// The order's write-off: 0 or 1.
    pub write_offs: Vec<WriteOffView>,
    /// Its reversals, oldest first.
    pub reversals: Vec<ReversalView>,
}

/// Every non-2xx answer of the biller.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// One of the code constants of this module.
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_matches_a_reference_hmac() {
        // The signed message is "<METHOD> <path>\n<timestamp>\n" followed by the body.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(b"k").unwrap();
        mac.update(b"POST /p\n1700000000\n{\"a\":1}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sign(b"k", "POST /p", 1_700_000_000, b"{\"a\":1}"), expected);
        assert_eq!(expected.len(), 64);
    }

    #[test]
    fn rfc4231_case_2_through_the_same_primitive() {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verify_accepts_own_signature_and_rejects_tampering() {
        let sig = sign(b"secret", "POST /p", 42, b"body");
        assert!(verify(b"secret", "POST /p", 42, b"body", &sig));
        assert!(verify(
            b"secret",
            "POST /p",
            42,
            b"body",
            &sig.to_uppercase()
        ));
        assert!(!verify(b"other", "POST /p", 42, b"body", &sig));
        assert!(!verify(b"secret", "POST /p", 43, b"body", &sig));
        assert!(!verify(b"secret", "POST /p", 42, b"bodY", &sig));
        assert!(!verify(b"secret", "POST /p", 42, b"body", &sig[..62]));
        assert!(!verify(b"secret", "POST /p", 42, b"body", "not hex at all"));
        assert!(!verify(b"secret", "POST /p", 42, b"body", ""));
        assert!(
            !verify(b"secret", "POST /q", 42, b"body", &sig),
            "another path"
        );
        assert!(
            !verify(b"secret", "GET /p", 42, b"body", &sig),
            "another method"
        );
        // A GET signs the empty body.
        assert!(verify(
            b"secret",
            "POST /p",
            42,
            b"",
            &sign(b"secret", "POST /p", 42, b"")
        ));
    }

    #[test]
    fn separator_keeps_timestamp_and_body_apart() {
        assert_ne!(
            sign(b"k", "POST /p", 1, b"2x"),
            sign(b"k", "POST /p", 12, b"x")
        );
    }

    #[test]
    fn freshness_holds_at_the_edges_without_overflow() {
        let now = 1_700_000_000;
        assert!(timestamp_fresh(now, now));
        assert!(timestamp_fresh(now - 300, now));
        assert!(timestamp_fresh(now + 300, now));
        assert!(!timestamp_fresh(now - 301, now));
        assert!(!timestamp_fresh(now + 301, now));
        assert!(!timestamp_fresh(i64::MIN, now));
        assert!(!timestamp_fresh(i64::MAX, now));
        assert!(!timestamp_fresh(i64::MAX, i64::MIN));
    }

    #[test]
    fn statuses_and_optional_reason_use_the_wire_spelling() {
        assert_eq!(
            serde_json::to_string(&WriteOffStatus::PartlyReversed).unwrap(),
            "\"PARTLY_REVERSED\""
        );
        assert_eq!(
            serde_json::to_string(&WriteOffStatus::Applied).unwrap(),
            "\"APPLIED\""
        );
        let parsed: ReverseRequest =
            serde_json::from_str(r#"{"reversal_id":"r1","amount":5}"#).unwrap();
        assert_eq!(parsed.reason, None);
        assert!(
            serde_json::from_str::<ReverseRequest>(r#"{"reversal_id":"r1","amount":5,"x":1}"#)
                .is_err()
        );
        assert_eq!(reversals_path("o1"), "/biller/v1/write-offs/o1/reversals");
    }
}
