//! Event transport. Events are first committed to the storage outbox together with the order
//! change that caused them; the relay then moves them, in commit order, to the configured
//! stream and advances a durable cursor only after the stream accepted them. So the stream is
//! at-least-once, and one order's events arrive in `version` order.

pub mod in_process;
pub mod kafka;
pub mod relay;

use crate::domain::Event;
use async_trait::async_trait;
use std::sync::Arc;

/// A stream failure; the relay retries from its cursor.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stream error: {0}")]
pub struct StreamError(pub String);

/// An event with its position in the outbox.
#[derive(Debug, Clone)]
pub struct Positioned {
    /// The outbox partition (one today; one per shard later).
    pub partition: u32,
    /// Position in that partition; strictly increasing in commit order.
    pub seq: u64,
    /// The event.
    pub event: Arc<Event>,
}

/// Where events go. One implementation per transport.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Publishes a batch in order; `Ok` means the transport holds every one of them.
    async fn publish(&self, events: &[Positioned]) -> Result<(), StreamError>;
    /// Whether the transport is reachable.
    async fn ready(&self) -> bool;
}
