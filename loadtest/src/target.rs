//! What a scenario can ask of a system under test: issue a submit token, create an order, pay
//! it, read it, close it, and deliver the channel's payment result for it (as the channel would). paycore answers over signed HTTP (`paycore_http`); the Redis-lock baseline
//! performs the classic design's operations in-process (`baseline`). Scenarios are written once
//! against this trait, so both systems see the same workload.

use std::future::Future;

/// Why a call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The system answered with a refusal: HTTP status and the contract's error code.
    Answer {
        /// HTTP status (the baseline uses the status paycore would answer).
        status: u16,
        /// The contract's snake_case code.
        code: String,
    },
    /// No answer: connection refused, timeout, or a backend failure.
    Transport(String),
}

impl CallError {
    /// The label used in reports: `409 already_paid`, `transport timeout`.
    pub fn label(&self) -> String {
        match self {
            CallError::Answer { status, code } => format!("{status} {code}"),
            CallError::Transport(what) => format!("transport {what}"),
        }
    }

    /// The contract's code, if the system answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            CallError::Answer { code, .. } => Some(code),
            CallError::Transport(_) => None,
        }
    }
}

/// A call's result.
pub type CallResult<T> = Result<T, CallError>;

/// An open payment, as a pay call answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// The order's `pay_serial_no`.
    pub serial: String,
    /// The channel's number for the payment (what its result callback names).
    pub trade_no: String,
}

/// The system under test.
pub trait Target: Send + Sync + 'static {
    /// `paycore` or `redis-lock`.
    fn name(&self) -> &'static str;

    /// Issues a one-time submit token.
    fn issue_token(&self) -> impl Future<Output = CallResult<String>> + Send;

    /// Creates an order with `token`; answers its order id.
    fn create(
        &self,
        token: &str,
        merchant_order_no: &str,
        amount: i64,
    ) -> impl Future<Output = CallResult<String>> + Send;

    /// Starts (or repeats) payment of an order; answers the payment.
    fn pay(&self, order_id: &str) -> impl Future<Output = CallResult<Payment>> + Send;

    /// Reads an order; answers its status.
    fn read(&self, order_id: &str) -> impl Future<Output = CallResult<String>> + Send;

    /// Closes an unpaid order; answers its status.
    fn close(&self, order_id: &str) -> impl Future<Output = CallResult<String>> + Send;

    /// Delivers the channel's result for `payment` of `order_id`: paid in full (`amount`, CNY).
    fn paid_callback(
        &self,
        order_id: &str,
        payment: &Payment,
        amount: i64,
    ) -> impl Future<Output = CallResult<()>> + Send;
}
