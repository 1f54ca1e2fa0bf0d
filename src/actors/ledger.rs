//! The ledger consumer: books the outbox into the double-entry ledger. It reads committed
//! events after its own durable cursor (`ledger`), loads the books of the orders they concern
//! (folded from the ledger's own stored transactions), computes each event's transactions with
//! the pure `domain::ledger_book::book`, and stores the whole batch with the new cursor in one
//! transaction through the single writer: a crash before that write books the same events
//! again (ids are derived, so the replay is identical and skipped), after it never. Woken by
//! the writer after commits that stored events, with a backstop poll.
//!
//! An event whose booking fails (its data lacks what the booking needs) is logged at error
//! level, counted in `paycore_ledger_rejected_events_total` and passed over: one bad event must
//! not stop the books of every other order, and `paycore ledger verify` names the order whose
//! ledger then disagrees with its state. A failed write (storage down, or an id stored with
//! other content) is retried after a pause and never passed over.
//!
//! No ractor actor: like the notifier's consumer it has no mailbox anyone sends to; it runs in
//! the log's consumer loop (`streams::consumer`) under the stream supervisor, stopped by the
//! one shutdown signal after the order actors drained (so it books their last events) and
//! before storage closes.

use crate::domain::ledger::LedgerTxn;
use crate::domain::ledger_book::{self, NO_MONEY_EVENTS, OrderBook};
use crate::metrics::Metrics;
use crate::storage::{LedgerStore, OrderStore, StoreError, StoredEvent};
use crate::streams::consumer::{self, Consume, Health, RunSpec};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Name of the ledger's outbox cursor in storage.
pub const CURSOR: &str = "ledger";
/// What the ledger consumer needs.
pub struct LedgerDeps {
    /// The outbox.
    pub events: Arc<dyn OrderStore>,
    /// The ledger.
    pub store: Arc<dyn LedgerStore>,
    /// Most events per batch (`ledger.batch`).
    pub batch: usize,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Changes after commits that stored events.
    pub commits: watch::Receiver<u64>,
    /// Wait after a commit before reading (`stream.consumer_linger_ms`).
    pub linger: std::time::Duration,
}

/// Starts the ledger consumer from its cursor (which must be registered), supervised: started
/// again after a failure, stopped once `shutdown` turns true after booking what is committed.
pub fn spawn(
    deps: LedgerDeps,
    health: Health,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let spec = RunSpec {
        name: CURSOR.to_string(),
        partition: 0,
        store: deps.events.clone(),
        commits: deps.commits.clone(),
        batch: deps.batch,
        linger: deps.linger,
    };
    let metrics = deps.metrics.clone();
    let ledger = Arc::new(Ledger { deps });
    consumer::spawn_partitions(spec, ledger, &health, metrics, shutdown)
}

/// The consumer.
struct Ledger {
    deps: LedgerDeps,
}

#[async_trait::async_trait]
impl Consume for Ledger {
    async fn take(
        &self,
        partition: u32,
        events: Vec<StoredEvent>,
        through: u64,
    ) -> Result<(), String> {
        self.book(partition, &events, through)
            .await
            .map_err(|e| e.to_string())
    }
}

impl Ledger {
    /// Books one batch of events (of `partition`) and moves the cursor there to `last`, in one
    /// write.
    async fn book(
        &self,
        partition: u32,
        events: &[StoredEvent],
        last: u64,
    ) -> Result<(), StoreError> {
        let d = &self.deps;
        let orders: BTreeSet<String> = events
            .iter()
            .filter(|e| !NO_MONEY_EVENTS.contains(&e.event.event_type.as_str()))
            .map(|e| e.event.order_id.clone())
            .collect();
        let mut books: HashMap<String, OrderBook> = HashMap::with_capacity(orders.len());
        if !orders.is_empty() {
            for (order, txns) in d
                .store
                .transactions_for_orders(orders.into_iter().collect())
                .await?
            {
                let book = OrderBook::from_transactions(&txns)
                    .map_err(|e| StoreError::Corrupt(format!("ledger of {order}: {e}")))?;
                books.insert(order, book);
            }
        }
        let mut txns: Vec<LedgerTxn> = Vec::new();
        for stored in events {
            let e = &stored.event;
            if NO_MONEY_EVENTS.contains(&e.event_type.as_str()) {
                continue;
            }
            let book = books.entry(e.order_id.clone()).or_default();
            let booked = ledger_book::book(e, book).and_then(|ts| {
                // Folded at once: the order's next event in this batch books against it.
                let mut next = book.clone();
                for t in &ts {
                    next.record(t)?;
                }
                Ok((ts, next))
            });
            match booked {
                Ok((ts, next)) => {
                    *book = next;
                    txns.extend(ts);
                }
                Err(error) => {
                    d.metrics.ledger_rejected.inc();
                    tracing::error!(
                        order_id = %e.order_id,
                        merchant_id = %e.merchant_id,
                        event_id = %e.event_id,
                        event_type = %e.event_type,
                        seq = stored.seq,
                        %error,
                        "event not booked in the ledger"
                    );
                }
            }
        }
        let out = d.store.write_batch(txns, CURSOR, partition, last).await?;
        d.metrics.ledger_batches.inc();
        d.metrics.ledger_transactions.inc_by(out.written as u64);
        d.metrics.ledger_postings.inc_by(out.postings as u64);
        d.metrics.ledger_cursor.set(last as i64);
        if out.skipped > 0 {
            tracing::info!(
                skipped = out.skipped,
                "ledger transactions already stored were skipped"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
