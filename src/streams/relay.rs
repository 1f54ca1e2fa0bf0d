//! The outbox relay: reads committed events after its durable cursor, publishes them, then
//! stores the new cursor. Woken by the writer after commits that stored events, and by a timer
//! as a backstop. A crash between publish and cursor write republishes: at-least-once.

use super::{EventSink, Positioned};
use crate::metrics::Metrics;
use crate::storage::OrderStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Name of the relay's cursor in storage.
pub const CURSOR: &str = "outbox-relay";
/// The outbox has one partition until orders are sharded.
const OUTBOX_PARTITION: u32 = 0;
/// Backstop poll when no commit wakes the relay.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Pause after a failure before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Runs the relay until `shutdown` turns true, then publishes what is committed and returns.
pub async fn run(
    store: Arc<dyn OrderStore>,
    sink: Arc<dyn EventSink>,
    wake: Arc<Notify>,
    batch: usize,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut cursor = loop {
        match store.cursor(CURSOR).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "relay cannot read its cursor; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    };
    loop {
        let stopping = *shutdown.borrow();
        match pump(store.as_ref(), sink.as_ref(), &mut cursor, batch, &metrics).await {
            Ok(moved) if moved == batch => continue, // more waiting
            Ok(_) if stopping => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "relay failed; retrying from cursor {cursor}");
                if stopping {
                    return;
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Moves one batch; returns how many events moved.
async fn pump(
    store: &dyn OrderStore,
    sink: &dyn EventSink,
    cursor: &mut u64,
    batch: usize,
    metrics: &Metrics,
) -> Result<usize, String> {
    let events = store
        .events_after(*cursor, batch)
        .await
        .map_err(|e| e.to_string())?;
    let Some(last) = events.last().map(|e| e.seq) else {
        return Ok(0);
    };
    let n = events.len();
    let events: Vec<_> = events
        .into_iter()
        .map(|e| Positioned {
            partition: OUTBOX_PARTITION,
            seq: e.seq,
            event: Arc::new(e.event),
        })
        .collect();
    sink.publish(&events).await.map_err(|e| e.to_string())?;
    for e in &events {
        metrics
            .stream_published
            .with_label_values(&[e.event.event_type.as_str()])
            .inc();
    }
    store
        .set_cursor(CURSOR, last)
        .await
        .map_err(|e| e.to_string())?;
    *cursor = last;
    Ok(n)
}
