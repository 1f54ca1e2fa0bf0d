//! Adapters that speak to third-party payment channels. Each channel kind is one file that
//! implements [`PaymentChannel`] and is registered in [`build`]; nothing else changes to add one.
//! Adapters do I/O only: rate limits and queueing live in the channel actor.

pub mod sim;

use crate::config::ChannelSettings;
use crate::domain::{Amount, OrderId, PayMethod, RefundId, RefundOutcome, ReportedPayment};
use async_trait::async_trait;
use std::sync::Arc;

/// A payment to open at a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenPayment {
    /// Our order id (the channel's "out trade no"); channels open at most one payment per id.
    pub order_id: OrderId,
    /// Amount.
    pub amount: Amount,
    /// ISO code.
    pub currency: &'static str,
    /// Method.
    pub pay_method: PayMethod,
    /// Payer's code, for barcode payments.
    pub auth_code: Option<String>,
    /// Shown to the payer.
    pub subject: Option<String>,
    /// Where the channel posts its result.
    pub notify_url: String,
}

/// What the channel answered when the payment was opened.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedPayment {
    /// The channel's transaction number.
    pub channel_trade_no: Option<String>,
    /// What the payer's device needs (QR URL, JS API parameters...).
    pub payload: serde_json::Value,
}

/// A payment's final result, as a channel reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum PaymentResult {
    /// Money taken.
    Paid(ReportedPayment),
    /// Payment failed.
    Failed {
        /// Channel's reason.
        reason: String,
    },
}

/// A verified asynchronous result from a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackEvent {
    /// Our order id, as we sent it.
    pub order_id: String,
    /// The result.
    pub result: PaymentResult,
}

/// How a payment stands at the channel, as a status query found it.
#[derive(Debug, Clone, PartialEq)]
pub enum PaymentState {
    /// The channel has no payment for this order.
    NotFound,
    /// Opened, not paid yet.
    Open,
    /// Closed unpaid at the channel.
    Closed,
    /// The payment failed.
    Failed {
        /// Channel's reason.
        reason: String,
    },
    /// Paid (the charges are listed).
    Paid,
}

/// A status query's answer: the state and every charge taken for the order (more than one when
/// the payer was charged twice).
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentStatus {
    /// State.
    pub state: PaymentState,
    /// Charges, the payment's own first.
    pub charges: Vec<ReportedPayment>,
}

/// How a close request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CloseOutcome {
    /// The channel closed the payment; no money will be taken.
    Closed,
    /// Too late: the channel had taken the money (the charges are listed).
    AlreadyPaid(Vec<ReportedPayment>),
}

/// A refund to make at a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundCall {
    /// The order (the channel's out_trade_no).
    pub order_id: OrderId,
    /// Our refund id: the channel's out_refund_no, the same on every retry.
    pub refund_id: RefundId,
    /// The charge to refund; `None` is the order's own payment.
    pub channel_trade_no: Option<String>,
    /// Minor units.
    pub amount: i64,
}

/// A channel's failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChannelError {
    /// Our own limit: no slot before the deadline, or the queue is full.
    #[error("channel {channel} is busy")]
    Busy {
        /// Channel.
        channel: String,
        /// Suggested wait before retrying, whole seconds.
        retry_after_secs: u64,
    },
    /// The channel answered with its rate-limit error.
    #[error("channel {0} refused the request: rate limited")]
    RateLimited(String),
    /// The channel refused the request on its merits.
    #[error("channel refused the request: {code}: {message}")]
    Rejected {
        /// Channel's code.
        code: String,
        /// Channel's message.
        message: String,
    },
    /// Network failure, timeout, a 5xx or an unreadable answer: the outcome is unknown.
    #[error("channel unavailable: {0}")]
    Unavailable(String),
    /// A callback failed verification (signature, timestamp).
    #[error("bad callback: {0}")]
    BadCallback(String),
    /// A correctly signed callback whose body cannot be read.
    #[error("malformed callback: {0}")]
    MalformedCallback(String),
}

/// The operations paycore needs from a payment channel.
#[async_trait]
pub trait PaymentChannel: Send + Sync + 'static {
    /// Opens a payment; idempotent per order id at the channel.
    async fn open_payment(&self, req: &OpenPayment) -> Result<OpenedPayment, ChannelError>;
    /// Asks how the order's payment stands.
    async fn query_payment(&self, order_id: &OrderId) -> Result<PaymentStatus, ChannelError>;
    /// Closes an unpaid payment.
    async fn close_payment(&self, order_id: &OrderId) -> Result<CloseOutcome, ChannelError>;
    /// Refunds (part of) a charge; idempotent per refund id. `Rejected` is a definite refusal.
    async fn refund(&self, call: &RefundCall) -> Result<RefundOutcome, ChannelError>;
    /// Asks how a refund stands; `None` when the channel never received it.
    async fn query_refund(
        &self,
        refund_id: &RefundId,
    ) -> Result<Option<RefundOutcome>, ChannelError>;
    /// Verifies and decodes a callback. `header` looks up a request header by name.
    fn verify_callback(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> Result<CallbackEvent, ChannelError>;
    /// The answer body the channel expects for a callback: accepted or not.
    fn callback_answer(&self, accepted: bool, message: &str) -> serde_json::Value;
}

/// Builds the adapter for a configured channel. `default_base_url` is the in-process
/// simulator's address, used when the channel names none.
pub fn build(
    settings: &ChannelSettings,
    default_base_url: Option<&str>,
) -> Result<Arc<dyn PaymentChannel>, String> {
    match settings.kind.as_str() {
        "sim" => {
            let base = if settings.base_url.is_empty() {
                default_base_url
                    .ok_or("no base_url and no in-process simulator")?
                    .to_string()
            } else {
                settings.base_url.clone()
            };
            Ok(Arc::new(sim::SimChannel::new(base, settings)?))
        }
        other => Err(format!("unknown channel kind {other}")),
    }
}
