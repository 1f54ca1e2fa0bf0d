//! The event log and its transports. Events are committed to the storage outbox together with
//! the order change that caused them; the outbox is the log (`consumer`): every consumer reads
//! it after its own durable cursor, at least once. With an external transport configured, the
//! relay is one such consumer and moves events, in commit order, to it; its cursor advances
//! only after the transport acknowledged them. One order's events arrive in `version` order.

pub mod codec;
pub mod consumer;
pub mod kafka;
pub mod relay;

use crate::storage::StoredEvent;
use async_trait::async_trait;

/// A stream failure; the relay retries from its cursor.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stream error: {0}")]
pub struct StreamError(pub String);

/// Where events go. One implementation per transport.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Publishes a batch in order; `Ok` means the transport acknowledged every event.
    async fn publish(&self, events: &[StoredEvent]) -> Result<(), StreamError>;
    /// Whether the transport is reachable.
    async fn ready(&self) -> bool;
}
