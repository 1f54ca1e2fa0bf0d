//! The outbox relay: a log consumer (cursor `outbox-relay`) that publishes committed events, in
//! commit order, to an external transport ([`EventSink`]: Kafka), and moves its cursor only
//! after the transport acknowledged the whole batch. A crash between the acknowledgement and
//! the cursor write publishes the batch again: at-least-once, and one order's events stay in
//! `version` order. With the embedded log alone there is no relay: the outbox is the stream.

use super::EventSink;
use super::consumer::Consume;
use crate::metrics::Metrics;
use crate::storage::{OrderStore, StoredEvent};
use std::sync::Arc;

/// Name of the relay's cursor in storage.
pub const CURSOR: &str = "outbox-relay";

/// Publishes batches to `sink`.
pub struct Relay {
    /// Where the cursor is stored.
    pub store: Arc<dyn OrderStore>,
    /// The transport.
    pub sink: Arc<dyn EventSink>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

#[async_trait::async_trait]
impl Consume for Relay {
    async fn take(
        &self,
        partition: u32,
        events: Vec<StoredEvent>,
        through: u64,
    ) -> Result<(), String> {
        self.sink
            .publish(&events)
            .await
            .map_err(|e| e.to_string())?;
        for e in &events {
            self.metrics
                .stream_published
                .with_label_values(&[e.event.event_type.as_str()])
                .inc();
        }
        self.store
            .set_cursor(CURSOR, partition, through)
            .await
            .map_err(|e| e.to_string())
    }
}
