//! Refunds of an order: requested by the merchant (partial or full, idempotent by `refund_no`,
//! never more in sum than the paid amount) or automatic (an extra payment returned by the
//! original route). The order's actor serializes them; the rules here are pure.

use super::ids::{RefundId, RefundNo};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Most refunds one order takes (merchant and automatic together); channels cap partial refunds
/// per payment in the same way (50 for WeChat Pay).
pub const MAX_REFUNDS_PER_ORDER: usize = 50;
/// Longest refund reason, in characters.
pub const MAX_REFUND_REASON_CHARS: usize = 256;

/// Where a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    /// Recorded; the channel has not confirmed it yet (it may have been sent).
    Pending,
    /// The channel accepted it and will finish it later.
    Processing,
    /// The money went back.
    Succeeded,
    /// The channel refused it, or it was given up; see `failure_reason`.
    Failed,
}

impl RefundStatus {
    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "PENDING",
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Succeeded => "SUCCEEDED",
            RefundStatus::Failed => "FAILED",
        }
    }

    /// Still waiting for the channel.
    pub fn is_open(self) -> bool {
        matches!(self, RefundStatus::Pending | RefundStatus::Processing)
    }
}

/// One refund of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// Derived from the order and the refund's position; the channel's out_refund_no.
    pub refund_id: RefundId,
    /// The merchant's number; `None` for an automatic refund.
    pub refund_no: Option<RefundNo>,
    /// Minor units.
    pub amount: i64,
    /// The merchant's reason, or why the automatic refund was made.
    pub reason: Option<String>,
    /// Where it stands.
    pub status: RefundStatus,
    /// The charge refunded; `None` means the order's own payment.
    pub channel_trade_no: Option<String>,
    /// Made by paycore, not asked for by the merchant: for an extra payment, or (with
    /// `for_fulfillment`) because fulfillment was given up.
    pub automatic: bool,
    /// The automatic refund of the order's own payment after fulfillment was given up.
    #[serde(default)]
    pub for_fulfillment: bool,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Time of the last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Refund {
    /// Whether it gives back the order's own payment (and so counts in `refunded_amount`): a
    /// merchant's refund, or the one after fulfillment was given up; not an extra payment's.
    pub fn returns_order_payment(&self) -> bool {
        !self.automatic || self.for_fulfillment
    }
}

/// A merchant's refund request, validated at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// Idempotency key per order.
    pub refund_no: RefundNo,
    /// Minor units, positive.
    pub amount: i64,
    /// Free text.
    pub reason: Option<String>,
}

/// How a refund ended at the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The money went back.
    Succeeded,
    /// The channel will finish it later.
    Processing,
    /// The channel refused it, or it was given up.
    Failed(String),
}

/// Checks a refund reason: at most [`MAX_REFUND_REASON_CHARS`] characters, no control characters.
pub fn parse_reason(s: &str) -> Result<String, &'static str> {
    if s.chars().count() > MAX_REFUND_REASON_CHARS {
        Err("reason is longer than 256 characters")
    } else if s.chars().any(char::is_control) {
        Err("reason must not contain control characters")
    } else {
        Ok(s.to_string())
    }
}
