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
//! No ractor actor: like the notifier's consumer it has no mailbox anyone sends to; it is a task
//! stopped by the one shutdown signal after the order actors drained (so it books their last
//! events) and before storage closes.

use crate::domain::ledger::LedgerTxn;
use crate::domain::ledger_book::{self, NO_MONEY_EVENTS, OrderBook};
use crate::metrics::Metrics;
use crate::storage::{LedgerStore, OrderStore, StoreError};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Name of the ledger's outbox cursor in storage.
pub const CURSOR: &str = "ledger";
/// Backstop poll of the outbox when no commit wakes the consumer.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Pause after a storage failure before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

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
}

/// Starts the consumer at `cursor`; it stops once `shutdown` turns true, after booking what is
/// committed by then.
pub fn spawn(deps: LedgerDeps, cursor: u64, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    let commits = deps.commits.clone();
    tokio::spawn(Consumer { deps }.run(cursor, commits, shutdown))
}

struct Consumer {
    deps: LedgerDeps,
}

impl Consumer {
    async fn run(
        self,
        mut cursor: u64,
        mut commits: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.deps.metrics.ledger_cursor.set(cursor as i64);
        loop {
            let stopping = *shutdown.borrow();
            // Seen before reading: a commit after this point changes it again and wakes us.
            commits.borrow_and_update();
            match self.pump(&mut cursor).await {
                Ok(read) if read == self.deps.batch => continue,
                Ok(_) if stopping => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, cursor, "the ledger cannot book events; retrying");
                    if stopping {
                        return;
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            }
            tokio::select! {
                changed = commits.changed() => {
                    if changed.is_err() {
                        // The store is gone; the backstop keeps the loop from spinning.
                        tokio::time::sleep(IDLE_POLL).await;
                    }
                }
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Books one batch of events; answers how many were read.
    async fn pump(&self, cursor: &mut u64) -> Result<usize, StoreError> {
        let d = &self.deps;
        let events = d.events.events_after(*cursor, d.batch).await?;
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(0);
        };
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
        for stored in &events {
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
        let out = d.store.write_batch(txns, CURSOR, last).await?;
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
        *cursor = last;
        Ok(events.len())
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
