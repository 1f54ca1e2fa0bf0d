//! Event transport. Events are first committed to the storage outbox together with the order
//! change that caused them; the relay then moves them, in commit order, to the configured
//! stream and advances a durable cursor only after the stream accepted them. So the stream is
//! at-least-once, and one order's events arrive in `version` order.

pub mod codec;
pub mod in_process;
pub mod relay;

use crate::domain::Event;
use async_trait::async_trait;
use std::sync::Arc;

/// A stream failure; the relay retries from its cursor.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stream error: {0}")]
pub struct StreamError(pub String);

/// Where events go. One implementation per transport.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Publishes a batch in order; `Ok` means the transport holds them.
    async fn publish(&self, events: &[Arc<Event>]) -> Result<(), StreamError>;
    /// Whether the transport is reachable.
    async fn ready(&self) -> bool;
}
