//! The wire protocol of the simulated channel, shared by the simulator and its clients:
//! the signature scheme (HMAC-SHA256 over timestamp and raw body), request and response
//! bodies, the callback body and its acknowledgement, and the error codes.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Header carrying the hex HMAC-SHA256 signature of a request or callback.
pub const SIGNATURE_HEADER: &str = "X-Sim-Signature";
/// Header carrying the signing time, unix seconds in decimal.
pub const TIMESTAMP_HEADER: &str = "X-Sim-Timestamp";
/// Largest accepted distance, in seconds, between a request's timestamp and the clock.
pub const MAX_TIMESTAMP_SKEW_SECS: u64 = 300;

/// Code of a 429: over the channel's QPS cap.
pub const FREQUENCY_LIMITED: &str = "FREQUENCY_LIMITED";
/// Code of a 401: missing or bad signature, or stale timestamp.
pub const SIGN_ERROR: &str = "SIGN_ERROR";
/// Code of a 400 (or 413): malformed, invalid or oversized request.
pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
/// Code of a 404: no such payment or route.
pub const NOT_FOUND: &str = "NOT_FOUND";
/// Code of a 409: close of a paid payment.
pub const ORDERPAID: &str = "ORDERPAID";
/// Code of a 409: pay or refund of a closed payment.
pub const ORDERCLOSED: &str = "ORDERCLOSED";
/// Code of a 409: create again for an out_trade_no with a different amount or currency.
pub const OUT_TRADE_NO_USED: &str = "OUT_TRADE_NO_USED";
/// Code of a 409: refunds would exceed the paid amount.
pub const REFUND_EXCEEDS: &str = "REFUND_EXCEEDS";
/// Code of a 409: refund of a payment that is not paid.
pub const NOT_PAID: &str = "NOT_PAID";
/// Code of a 503: a record capacity of the simulator is reached.
pub const CAPACITY: &str = "CAPACITY";
/// Code of a 503: the channel failed internally (injected by the refund error knobs); the
/// request may or may not have taken effect, so a client queries before it retries.
pub const SYSTEMERROR: &str = "SYSTEMERROR";

type HmacSha256 = Hmac<Sha256>;

fn keyed_mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(format!("{timestamp}\n").as_bytes());
    mac.update(body);
    mac
}

/// hex(HMAC-SHA256(secret, format!("{timestamp}\n") bytes followed by body bytes)).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    hex::encode(keyed_mac(secret, timestamp, body).finalize().into_bytes())
}

/// Constant-time check of a hex signature; false on bad hex.
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], signature_hex: &str) -> bool {
    match hex::decode(signature_hex) {
        Ok(tag) => keyed_mac(secret, timestamp, body)
            .verify_slice(&tag)
            .is_ok(),
        Err(_) => false,
    }
}

/// Body of `POST /sim/v1/payments`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreatePaymentRequest {
    pub out_trade_no: String,
    pub amount: i64,
    pub currency: String,
    pub pay_method: String,
    pub auth_code: Option<String>,
    pub subject: Option<String>,
    pub notify_url: String,
}

/// State of a payment at the channel.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    Notpay,
    Success,
    Payerror,
    Closed,
}

/// A payment as the channel shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PaymentView {
    pub trade_no: String,
    pub out_trade_no: String,
    pub amount: i64,
    pub currency: String,
    pub status: PaymentStatus,
    pub code_url: Option<String>,
    /// RFC 3339 UTC.
    pub paid_at: Option<String>,
    pub refunded_amount: i64,
    pub failure_reason: Option<String>,
    /// Every charge the channel took for this out_trade_no: the payment's own first, then any
    /// further (duplicate) charge, each with its own trade_no. A charge's amount is what the
    /// payer was actually charged, which may differ from `amount` (what was asked).
    #[serde(default)]
    pub charges: Vec<ChargeRecord>,
}

/// Body of `POST /sim/v1/refunds`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefundRequest {
    pub out_trade_no: String,
    /// Unique across the channel: a repeat with the same number is the same refund.
    pub out_refund_no: String,
    pub amount: i64,
    /// Which charge to refund (its trade_no); absent means the payment's own charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
}

/// State of a refund at the channel.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    Success,
    Failed,
}

/// A refund as the channel shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefundView {
    pub refund_id: String,
    pub out_refund_no: String,
    pub out_trade_no: String,
    /// The charge refunded.
    #[serde(default)]
    pub trade_no: String,
    pub amount: i64,
    pub status: RefundStatus,
    pub refunded_at: String,
}

/// Body of the asynchronous result the simulator POSTs to a payment's notify_url.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallbackBody {
    pub event_id: String,
    pub trade_no: String,
    pub out_trade_no: String,
    pub amount: i64,
    pub currency: String,
    /// SUCCESS or PAYERROR.
    pub status: PaymentStatus,
    pub paid_at: Option<String>,
    pub failure_reason: Option<String>,
}

/// What the callback receiver must answer (HTTP 200 with code "SUCCESS") for delivery to end.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallbackAck {
    pub code: String,
    pub message: Option<String>,
}

/// The money the channel took from the payer for one payment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChargeRecord {
    pub trade_no: String,
    pub out_trade_no: String,
    pub amount: i64,
    #[serde(default)]
    pub currency: String,
    pub charged_at: String,
}

/// GET /sim/v1/payments?out_trade_no=X : everything the channel did for that merchant order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditView {
    pub out_trade_no: String,
    pub payments: Vec<PaymentView>,
    pub charges: Vec<ChargeRecord>,
    pub refunds: Vec<RefundView>,
}

/// Every non-2xx answer of the simulator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_matches_a_reference_hmac() {
        // The signed message is "<timestamp>\n" followed by the body, as one byte string.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(b"k").unwrap();
        mac.update(b"1700000000\n{\"a\":1}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sign(b"k", 1_700_000_000, b"{\"a\":1}"), expected);
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
        let sig = sign(b"secret", 42, b"body");
        assert!(verify(b"secret", 42, b"body", &sig));
        assert!(verify(b"secret", 42, b"body", &sig.to_uppercase()));
        assert!(!verify(b"other", 42, b"body", &sig));
        assert!(!verify(b"secret", 43, b"body", &sig));
        assert!(!verify(b"secret", 42, b"bodY", &sig));
        assert!(!verify(b"secret", 42, b"body", &sig[..62]));
        assert!(!verify(b"secret", 42, b"body", "not hex at all"));
        assert!(!verify(b"secret", 42, b"body", ""));
    }

    #[test]
    fn separator_keeps_timestamp_and_body_apart() {
        assert_ne!(sign(b"k", 1, b"2x"), sign(b"k", 12, b"x"));
    }

    #[test]
    fn statuses_use_channel_spelling() {
        assert_eq!(
            serde_json::to_string(&PaymentStatus::Payerror).unwrap(),
            "\"PAYERROR\""
        );
        assert_eq!(
            serde_json::to_string(&PaymentStatus::Notpay).unwrap(),
            "\"NOTPAY\""
        );
        assert_eq!(
            serde_json::to_string(&RefundStatus::Success).unwrap(),
            "\"SUCCESS\""
        );
    }
}
