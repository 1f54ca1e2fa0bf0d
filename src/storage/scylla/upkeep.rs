//! What the CQL backend keeps off the write path: order counts per status, derived from the
//! event log, and the purge of log blocks every consumer has passed.
//!
//! **Status counts.** A change writes no count: counting in the change's batch would make every
//! change touch one hot partition (or a counter, which is not idempotent). Instead
//! `status_tallies` holds, per log partition, the number of orders in each status *as of* a log
//! position (its static `seq`): catching up reads the partition's events after that position,
//! moves one order from its previous event's status to this event's status per event, and writes
//! the new tallies and the new position in one single-partition batch (absolute values, so a
//! batch written twice is harmless). Every status change publishes an event carrying the order's
//! status after it, so the events are enough: an event's previous status is that of the order's
//! event before it (read from the order's own partition, or remembered from this catch-up).
//! `status_counts` catches up (a bounded number of events per partition) and then sums the
//! tallies: the answer is exact as of the positions reached, and lags the log by what one call
//! did not reach. The tally's position is also a log cursor (`status_counts`), so the purge keeps
//! every event not yet counted. Catch-ups in one process take turns; two paycore processes on one
//! keyspace would each count (one owner of the log is assumed, as by the log itself).
//!
//! **Purge.** Log entries are deleted a whole block (one CQL partition, one tombstone) at a time,
//! once every registered cursor of its log partition is past the block's last position and its
//! newest event is older than the retention. `log_purged` records, per log partition, the first
//! block not yet purged. Submit tokens and command replies need no purge: they are written with
//! a TTL. An order's own events stay in its partition (its history).

use super::{ScyllaStore, be};
use crate::domain::{Event, OrderId, OrderStatus};
use crate::storage::{EventLog, OrderRecords, StoreError};
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use std::collections::HashMap;
use time::OffsetDateTime;

/// The tallies' log cursor.
pub const CURSOR: &str = "status_counts";
/// Most events one catch-up reads per log partition.
const CATCH_UP_EVENTS: usize = 20_000;
/// Events read per page while catching up.
const PAGE: usize = 1_000;
/// Orders whose last counted status a catch-up remembers (it reads the order's events for the
/// others).
const REMEMBERED_ORDERS: usize = 100_000;
/// Most log blocks one purge call deletes.
const PURGE_BLOCKS: usize = 64;

/// The first block of epoch 1: where a log partition's blocks start.
fn first_block() -> i64 {
    super::log::block_of(1 << super::log::EPOCH_SHIFT)
}

/// The statements of this module.
pub(super) struct Statements {
    read_tallies: PreparedStatement,
    set_tally: PreparedStatement,
    pub(super) read_purged: PreparedStatement,
    set_purged: PreparedStatement,
    pub(super) newest_in_block: PreparedStatement,
    delete_block: PreparedStatement,
    ping: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(session: &Session) -> Result<Self, StoreError> {
        let p = |cql: &'static str| async move {
            Ok::<_, StoreError>(super::plain(session.prepare(cql).await.map_err(be)?))
        };
        Ok(Self {
            read_tallies: p("SELECT partition, status, n, seq FROM status_tallies").await?,
            set_tally: p(
                "UPDATE status_tallies SET n = ?, seq = ? WHERE partition = ? AND status = ?",
            )
            .await?,
            read_purged: p("SELECT partition, block FROM log_purged").await?,
            set_purged: p("UPDATE log_purged SET block = ? WHERE partition = ?").await?,
            newest_in_block: p("SELECT seq, event_schema, event FROM event_log \
                 WHERE partition = ? AND block = ? ORDER BY seq DESC LIMIT 1")
            .await?,
            delete_block: p("DELETE FROM event_log WHERE partition = ? AND block = ?").await?,
            ping: p("SELECT release_version FROM system.local").await?,
        })
    }
}

/// What catch-ups share in this process.
#[derive(Default)]
pub(super) struct Tallies {
    /// Per log partition: (position, orders per status), once read.
    state: Option<Vec<(u64, HashMap<OrderStatus, i64>)>>,
    /// Orders' last counted (version, status).
    last: HashMap<String, (u64, OrderStatus)>,
}

/// The status an event records for its order after the change.
fn status_after(event: &Event) -> Result<OrderStatus, StoreError> {
    #[derive(serde::Deserialize)]
    struct View<'a> {
        #[serde(borrow)]
        status: std::borrow::Cow<'a, str>,
    }
    let view: View<'_> = serde_json::from_str(event.data.get())
        .map_err(|e| StoreError::Corrupt(format!("event {}: {e}", event.event_id)))?;
    OrderStatus::parse(&view.status).ok_or_else(|| {
        StoreError::Corrupt(format!("event {}: status {}", event.event_id, view.status))
    })
}

impl ScyllaStore {
    /// Counts what the log holds past the tallies' positions (bounded per partition) and
    /// answers orders per status as of the positions reached.
    pub(super) async fn counted_statuses(&self) -> Result<Vec<(OrderStatus, i64)>, StoreError> {
        let mut t = self.tallies.lock().await;
        if t.state.is_none() {
            t.state = Some(self.read_tallies().await?);
        }
        for p in 0..self.log_partitions() {
            self.catch_up(&mut t, p).await?;
        }
        let mut total: HashMap<OrderStatus, i64> = HashMap::new();
        for (_, counts) in t.state.iter().flatten() {
            for (s, n) in counts {
                let sum = total.entry(*s).or_default();
                *sum = sum
                    .checked_add(*n)
                    .ok_or_else(|| StoreError::Corrupt("status count overflow".into()))?;
            }
        }
        Ok(OrderStatus::ALL
            .iter()
            .map(|s| (*s, total.get(s).copied().unwrap_or(0)))
            .collect())
    }

    async fn read_tallies(&self) -> Result<Vec<(u64, HashMap<OrderStatus, i64>)>, StoreError> {
        let mut out: Vec<(u64, HashMap<OrderStatus, i64>)> = (0..self.log_partitions())
            .map(|_| Default::default())
            .collect();
        let rows = self
            .exec(&self.upkeep_st.read_tallies, ())
            .await?
            .into_rows_result()
            .map_err(be)?;
        for row in rows
            .rows::<(i32, String, Option<i64>, Option<i64>)>()
            .map_err(be)?
        {
            let (p, status, n, seq) = row.map_err(be)?;
            let Some(slot) = usize::try_from(p).ok().and_then(|p| out.get_mut(p)) else {
                return Err(StoreError::Corrupt(format!(
                    "status tally of partition {p}"
                )));
            };
            slot.0 = seq.map_or(0, |s| s as u64);
            let status = OrderStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("status tally {status}")))?;
            slot.1.insert(status, n.unwrap_or(0));
        }
        // The purge waits for the tallies from the first count on.
        for (p, (seq, _)) in out.iter().enumerate() {
            self.set_cursor(CURSOR, p as u32, *seq).await?;
        }
        Ok(out)
    }

    async fn catch_up(&self, t: &mut Tallies, p: u32) -> Result<(), StoreError> {
        let Some((mut seq, mut counts)) = t.state.as_ref().map(|s| s[p as usize].clone()) else {
            return Ok(());
        };
        let mut read = 0;
        while read < CATCH_UP_EVENTS {
            let page = self.events_after(p, seq, PAGE).await?;
            if page.is_empty() {
                break;
            }
            read += page.len();
            let mut touched: Vec<OrderStatus> = Vec::new();
            for stored in &page {
                let event = &stored.event;
                seq = stored.seq;
                let after = status_after(event)?;
                let before = match t.last.get(&event.order_id) {
                    Some((v, s)) if *v < event.version => Some(*s),
                    // Seen at this version or later: a duplicate of the log (at least once).
                    Some(_) => continue,
                    None => self.status_before(&event.order_id, event.version).await?,
                };
                if t.last.len() >= REMEMBERED_ORDERS {
                    t.last.clear();
                }
                t.last
                    .insert(event.order_id.clone(), (event.version, after));
                if before == Some(after) {
                    continue;
                }
                if let Some(b) = before {
                    let n = counts.entry(b).or_default();
                    *n = n
                        .checked_sub(1)
                        .ok_or_else(|| StoreError::Corrupt("status count overflow".into()))?;
                    touched.push(b);
                }
                let n = counts.entry(after).or_default();
                *n = n
                    .checked_add(1)
                    .ok_or_else(|| StoreError::Corrupt("status count overflow".into()))?;
                touched.push(after);
            }
            touched.sort_by_key(|s| s.as_str());
            touched.dedup();
            if touched.is_empty() {
                // Nothing moved: the position alone moves (with any one tally).
                touched.push(OrderStatus::Created);
            }
            // One partition: the tallies and their position land together (absolute values).
            let mut batch = Batch::new(BatchType::Unlogged);
            let mut values: Vec<(i64, i64, i32, &'static str)> = Vec::new();
            for s in &touched {
                batch.append_statement(self.upkeep_st.set_tally.clone());
                values.push((
                    counts.get(s).copied().unwrap_or(0),
                    seq as i64,
                    p as i32,
                    s.as_str(),
                ));
            }
            batch.set_is_idempotent(true);
            self.exec_batch(&batch, values).await?;
            if let Some(state) = t.state.as_mut() {
                state[p as usize] = (seq, counts.clone());
            }
            self.set_cursor(CURSOR, p, seq).await?;
        }
        Ok(())
    }

    /// The status of the order's latest event before `version` (`None`: it had none).
    async fn status_before(
        &self,
        order_id: &str,
        version: u64,
    ) -> Result<Option<OrderStatus>, StoreError> {
        let id = OrderId::parse(order_id)
            .map_err(|e| StoreError::Corrupt(format!("order id {order_id} in the log: {e}")))?;
        let events = self.order_events(&id).await?;
        events
            .iter()
            .filter(|e| e.version < version)
            .max_by_key(|e| e.version)
            .map(status_after)
            .transpose()
    }

    /// Deletes up to a bound of log blocks that every cursor has passed and whose newest event
    /// is older than `events_before`; answers blocks deleted.
    pub(super) async fn purge_log(&self, events_before: OffsetDateTime) -> Result<u64, StoreError> {
        // Count first: the tallies' cursor is one of those the purge waits for.
        self.counted_statuses().await?;
        let (cursors, heads) = self.cursors().await?;
        let rows = self
            .exec(&self.upkeep_st.read_purged, ())
            .await?
            .into_rows_result()
            .map_err(be)?;
        let mut purged: HashMap<u32, i64> = HashMap::new();
        for row in rows.rows::<(i32, Option<i64>)>().map_err(be)? {
            let (p, block) = row.map_err(be)?;
            if let Some(b) = block {
                purged.insert(p as u32, b);
            }
        }
        let mut removed = 0u64;
        for p in 0..self.log_partitions() {
            // The lowest cursor of the partition (the head when none is registered).
            let low = cursors
                .iter()
                .filter(|(_, pos)| pos.partition == p)
                .map(|(_, pos)| pos.seq)
                .min()
                .unwrap_or(heads[p as usize]);
            // Blocks wholly at or below `low`.
            let end = super::log::block_of(low + 1);
            let mut block = purged.get(&p).copied().unwrap_or_else(first_block);
            let start = block;
            while block < end && (removed as usize) < PURGE_BLOCKS {
                let rows = self
                    .exec(&self.upkeep_st.newest_in_block, (p as i32, block))
                    .await?
                    .into_rows_result()
                    .map_err(be)?;
                match rows
                    .maybe_first_row::<(i64, Option<i32>, Option<String>)>()
                    .map_err(be)?
                {
                    None => {
                        // Below every cursor an empty block is past its epoch's end.
                        let epoch =
                            (block as u64) << super::log::BLOCK_BITS >> super::log::EPOCH_SHIFT;
                        block = super::log::block_of((epoch + 1) << super::log::EPOCH_SHIFT)
                            .max(block + 1);
                    }
                    Some((_, schema, body)) => {
                        let newest = super::log::decode(schema, body)?;
                        if newest.occurred_at >= events_before {
                            break;
                        }
                        self.exec(&self.upkeep_st.delete_block, (p as i32, block))
                            .await?;
                        removed += 1;
                        block += 1;
                    }
                }
            }
            if block != start {
                self.exec(&self.upkeep_st.set_purged, (block, p as i32))
                    .await?;
            }
        }
        Ok(removed)
    }
}

#[async_trait::async_trait]
impl crate::storage::OrderStore for ScyllaStore {
    async fn status_counts(&self) -> Result<Vec<(OrderStatus, i64)>, StoreError> {
        self.counted_statuses().await
    }

    async fn purge(
        &self,
        _now: OffsetDateTime,
        events_before: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        // Expired tokens and command replies go by their TTL.
        self.purge_log(events_before).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.exec(&self.upkeep_st.ping, ()).await.map(|_| ())
    }

    async fn close(&self) {
        // Every write is acknowledged only once the cluster took it: nothing is pending here.
        self.release_ownership().await;
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
    }
}
