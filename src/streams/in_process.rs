//! The in-process stream: a bounded broadcast channel that components of this process subscribe
//! to (the ledger later; the notifier reads the outbox by its own cursor instead, since a lossy
//! broadcast is never the source of truth). A subscriber that falls more than `buffer` events
//! behind is told how many it missed (`Lagged`) and re-reads them from the outbox by sequence.

use super::{EventSink, Positioned, StreamError};
use crate::domain::Event;
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::broadcast;

/// The in-process stream.
pub struct InProcessStream {
    tx: broadcast::Sender<Arc<Event>>,
}

impl InProcessStream {
    /// A stream keeping at most `buffer` events per subscriber.
    pub fn new(buffer: usize) -> Self {
        let (tx, _) = broadcast::channel(buffer.max(1));
        Self { tx }
    }

    /// A new subscriber, seeing events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

#[async_trait]
impl EventSink for InProcessStream {
    async fn publish(&self, events: &[Positioned]) -> Result<(), StreamError> {
        for e in events {
            // No subscriber is not an error: the outbox keeps the event for the retention time.
            let _ = self.tx.send(e.event.clone());
        }
        Ok(())
    }

    async fn ready(&self) -> bool {
        true
    }
}
