//! Every payment a channel reports for an order is kept on the order: the one that paid it, and
//! any that cannot be applied (a payment after close or failure, a second charge under another
//! trade number, a wrong amount or currency). Those are never dropped: each gets an automatic
//! refund by the original route. Pure rules only.

use super::ids::RefundId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Most channel payments kept on one order. A channel that reports more is refused (the callback
/// is answered with an error, so the channel keeps it) and an operator is needed.
pub const MAX_PAYMENTS_PER_ORDER: usize = 16;

/// A charge as a channel reports it (callback or query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedPayment {
    /// The channel's transaction number of this charge.
    pub channel_trade_no: String,
    /// What was charged, minor units.
    pub amount: i64,
    /// ISO 4217 code of the charge.
    pub currency: String,
    /// When the channel took it.
    pub paid_at: OffsetDateTime,
}

/// Whether a reported payment paid the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentRole {
    /// It paid the order.
    Applied,
    /// It could not be applied; it is refunded automatically.
    Extra,
}

/// Why a reported payment could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtraReason {
    /// The order was closed or failed when the money arrived.
    OrderNotPayable,
    /// The order was already paid (or is being paid) under another trade number.
    DuplicateCharge,
    /// The channel charged another amount than the order's.
    AmountMismatch,
    /// The channel charged in another currency than the order's.
    CurrencyMismatch,
}

impl ExtraReason {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ExtraReason::OrderNotPayable => "order_not_payable",
            ExtraReason::DuplicateCharge => "duplicate_charge",
            ExtraReason::AmountMismatch => "amount_mismatch",
            ExtraReason::CurrencyMismatch => "currency_mismatch",
        }
    }
}

/// A payment the channel reported for this order, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelPayment {
    /// The channel's transaction number.
    pub channel_trade_no: String,
    /// What was charged, minor units.
    pub amount: i64,
    /// ISO 4217 code of the charge.
    pub currency: String,
    /// When the channel took it.
    #[serde(with = "time::serde::rfc3339")]
    pub paid_at: OffsetDateTime,
    /// When we recorded it.
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    /// Applied to the order, or extra.
    pub role: PaymentRole,
    /// Why it is extra.
    pub reason: Option<ExtraReason>,
    /// The automatic refund of an extra payment.
    pub refund_id: Option<RefundId>,
}
