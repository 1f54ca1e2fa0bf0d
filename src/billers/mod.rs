//! Adapters that speak to merchants' business systems ("billers"), where a paid order is
//! fulfilled: the customer's account is credited (a write-off) and, before a refund, the credit
//! is reversed. One implementation per protocol; today the protocol of `biller-sim`. Nothing
//! here decides anything: the order's actor and state machine do.

pub mod http;

use crate::config::BillerTarget;
use crate::domain::{Order, OrderId};
use async_trait::async_trait;
use std::sync::Arc;

/// Why a business system did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillerError {
    /// It answered, and refused: asking again the same way will not change it.
    #[error("the business system refused: {code}: {message}")]
    Refused {
        /// Its code.
        code: String,
        /// Its message.
        message: String,
    },
    /// No usable answer (timeout, connection, a 5xx): the call may or may not have taken
    /// effect; both calls are idempotent, so it is simply made again.
    #[error("the business system did not answer usably: {0}")]
    Unavailable(String),
}

/// A merchant's business system.
#[async_trait]
pub trait Biller: Send + Sync + 'static {
    /// Credits the paid order (idempotent by order id: a repeat credits nothing more).
    async fn write_off(&self, order: &Order) -> Result<(), BillerError>;
    /// Reverses `amount` of the order's credit (idempotent by `reversal_id`).
    async fn reverse(
        &self,
        order_id: &OrderId,
        reversal_id: &str,
        amount: i64,
        reason: Option<&str>,
    ) -> Result<(), BillerError>;
}

/// Builds the adapter for a merchant's configured business system; an empty URL means the
/// in-process simulator at `sim_url`.
pub fn build(target: &BillerTarget, sim_url: Option<&str>) -> Result<Arc<dyn Biller>, String> {
    let url = if target.url.is_empty() {
        sim_url
            .ok_or("the business system's url is empty and no in-process simulator runs")?
            .to_string()
    } else {
        target.url.clone()
    };
    Ok(Arc::new(http::HttpBiller::new(url, target)?))
}
