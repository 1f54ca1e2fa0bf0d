//! The event log in CQL: one log partition per shard (an order's events all go to its shard's
//! partition), each a sequence of positions handed out by this process, which owns every
//! partition (later: the node that owns the shard, fenced by the partition's epoch).
//!
//! A change's events are committed in the order's own partition (its LWT or batch); the log
//! gets them right after, in three steps around it:
//!
//! 1. an **intent** (`log_intents`: the order and the version) is written before the change;
//! 2. once the change is applied, its events get positions and are written to `event_log`;
//! 3. the intent is deleted.
//!
//! A crash after the change and before step 3 leaves the intent: the next owner, when it opens
//! the log, writes the events of every intent it finds again (at least once: a consumer may see
//! an event twice, never miss one). An intent whose change was never applied finds no events
//! and is dropped.
//!
//! A position is the owner's epoch (bumped by an LWT each time a paycore opens the log) in its
//! high bits and a counter in the low 40: a new owner's positions are all past any an old one
//! handed out, and two owners (which the future shard ownership is to prevent, and which tests
//! running side by side on one keyspace are) never collide.
//!
//! Consumers read a partition only up to its *stable* position: every position at or below it
//! is written, or was handed out by an owner that died and is abandoned for good. The stable
//! position is the lowest position in flight less one. Below it, an `event_log` block with no
//! entries can only be past the end of an epoch: a reader jumps to the next epoch's first block.

use super::{ScyllaStore, be};
use crate::domain::Event;
use crate::storage::{EventLog, Position, StoreError, StoredEvent};
use async_trait::async_trait;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Log partitions: one per shard.
pub const PARTITIONS: u32 = super::timers::SHARDS;
/// Positions per `event_log` partition (a block): `seq >> BLOCK_BITS`.
pub(super) const BLOCK_BITS: u32 = 16;
/// A position's counter bits; the owner's epoch is above them.
pub(super) const EPOCH_SHIFT: u32 = 40;
/// Most changes one log partition holds between their intent and their log entries; a change
/// that finds no slot free within the request timeout is refused (503, overloaded) before it
/// writes anything.
pub const MAX_IN_FLIGHT: u64 = 4_096;
/// Pause between attempts to log a committed change's events when writing them failed.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Reads of the order's partition to settle a change whose outcome was not answered, before
/// its intent is left to the next owner's recovery.
const SETTLE_ATTEMPTS: u32 = 20;

pub(super) fn block_of(seq: u64) -> i64 {
    (seq >> BLOCK_BITS) as i64
}

/// One log partition's positions.
#[derive(Debug, Default)]
struct Partition {
    /// The next position to hand out.
    next: u64,
    /// Handed out, not yet written.
    in_flight: BTreeSet<u64>,
    /// Every position at or below this is written or abandoned.
    stable: u64,
}

impl Partition {
    fn settle(&mut self) {
        self.stable = match self.in_flight.first() {
            Some(first) => first - 1,
            None => self.next - 1,
        };
    }
}

/// The log's state in this process.
pub(super) struct LogState {
    partitions: Vec<Mutex<Partition>>,
    slots: Vec<Arc<Semaphore>>,
    /// Changes whenever a partition's stable position moves.
    committed: watch::Sender<u64>,
    /// Set once this process took every partition (`open_log`): changes may be written.
    owned: std::sync::atomic::AtomicBool,
}

impl LogState {
    pub fn new() -> Self {
        Self {
            partitions: (0..PARTITIONS)
                .map(|_| Mutex::new(Partition::default()))
                .collect(),
            slots: (0..PARTITIONS)
                .map(|_| Arc::new(Semaphore::new(MAX_IN_FLIGHT as usize)))
                .collect(),
            committed: watch::channel(0).0,
            owned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn part(&self, p: u32) -> std::sync::MutexGuard<'_, Partition> {
        self.partitions[p as usize]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stable(&self, p: u32) -> u64 {
        self.part(p).stable
    }
}

/// A change's place in the log, taken before the change is written: its intent is stored and
/// a slot in its partition is held.
pub(super) struct Ticket {
    partition: u32,
    order_id: String,
    /// Per version the change writes, its intent: the version's first event id (`None`: an
    /// intent of `log_intents`, by version alone, left by a paycore from before migration 4).
    intents: Vec<(u64, Option<String>)>,
    _slot: OwnedSemaphorePermit,
}

/// A partition number the log has, or the error naming how many it has.
pub(super) fn check_partition(partition: u32) -> Result<(), StoreError> {
    if partition < PARTITIONS {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "the log has {PARTITIONS} partitions (0 to {}), not {partition}",
            PARTITIONS - 1
        )))
    }
}

/// The log partition of an order.
pub fn partition_of(order_id: &str) -> u32 {
    super::timers::shard_of(order_id) as u32
}

impl ScyllaStore {
    /// Changes after every log write that moved a partition's stable position: each consumer
    /// waits on its own receiver.
    pub fn watch_events_committed(&self) -> watch::Receiver<u64> {
        self.log.committed.subscribe()
    }

    /// Takes ownership of every log partition: a new epoch, positions starting past what the
    /// last owner may have handed out, then the intents that owner left are logged.
    pub(super) async fn open_log(&self) -> Result<(), StoreError> {
        let mut intents = Vec::new();
        for p in 0..PARTITIONS {
            let start = self.claim_partition(p).await?;
            {
                let mut part = self.log.part(p);
                part.next = start;
                part.in_flight.clear();
                part.settle();
            }
            let rows = self
                .exec(&self.st.read_intents, (p as i32,))
                .await?
                .into_rows_result()
                .map_err(be)?;
            for row in rows.rows::<(String, i64, String)>().map_err(be)? {
                let (order_id, version, event_id) = row.map_err(be)?;
                intents.push((p, order_id, version as u64, Some(event_id)));
            }
            let rows = self
                .exec(&self.st.read_old_intents, (p as i32,))
                .await?
                .into_rows_result()
                .map_err(be)?;
            for row in rows.rows::<(String, i64)>().map_err(be)? {
                let (order_id, version) = row.map_err(be)?;
                intents.push((p, order_id, version as u64, None));
            }
        }
        if !intents.is_empty() {
            // A change of the last owner may still be in flight at a coordinator: let it end,
            // so what the intents find is final.
            tokio::time::sleep(Duration::from_millis(self.settings.request_timeout_ms)).await;
            tracing::warn!(
                intents = intents.len(),
                "logging the events of changes a previous paycore committed and did not log"
            );
        }
        self.log
            .owned
            .store(true, std::sync::atomic::Ordering::Release);
        for (p, order_id, version, event_id) in intents {
            let mut events = self.events_at_version(&order_id, version).await?;
            // The version's events are this intent's change only if its first event is there:
            // otherwise the change was not applied, and the version is another change's (or
            // no one's).
            if let Some(id) = &event_id
                && !events.iter().any(|e| e.event_id.as_str() == id)
            {
                events.clear();
            }
            let ticket = Ticket {
                partition: p,
                order_id,
                intents: vec![(version, event_id)],
                _slot: self.slot(p).await?,
            };
            self.log_events(ticket, &events).await?;
        }
        Ok(())
    }

    /// A reader's view of the log (`Role::Reader`): each partition readable up to the last
    /// position written in its owner's current epoch (nothing is claimed).
    pub(super) async fn read_heads(&self) -> Result<(), StoreError> {
        // The first block not purged, per partition: the purge may have taken the epoch's first.
        let rows = self
            .exec(&self.upkeep_st.read_purged, ())
            .await?
            .into_rows_result()
            .map_err(be)?;
        let mut purged = vec![0i64; PARTITIONS as usize];
        for row in rows.rows::<(i32, Option<i64>)>().map_err(be)? {
            let (p, block) = row.map_err(be)?;
            if let (Some(slot), Some(block)) = (purged.get_mut(p as usize), block) {
                *slot = block;
            }
        }
        for p in 0..PARTITIONS {
            let head = self.written_head(p, purged[p as usize]).await?;
            let mut part = self.log.part(p);
            part.next = head + 1;
            part.in_flight.clear();
            part.settle();
        }
        Ok(())
    }

    /// The last position written in partition `p`'s current epoch (its start less one when
    /// none is; 0 for a partition never owned). An epoch's positions are written block after
    /// block from its first block not purged (`unpurged`), so the last block with entries is
    /// found by galloping, then halving.
    async fn written_head(&self, p: u32, unpurged: i64) -> Result<u64, StoreError> {
        let rows = self
            .exec(&self.st.read_log_partition, (p as i32,))
            .await?
            .into_rows_result()
            .map_err(be)?;
        let Some((_, Some(start))) = rows
            .maybe_first_row::<(Option<i64>, Option<i64>)>()
            .map_err(be)?
        else {
            return Ok(0);
        };
        let start = start as u64;
        let first = block_of(start).max(unpurged);
        let Some(mut head) = self.last_in_block(p, first).await? else {
            // Nothing written since the purge (or in this epoch): every position before the
            // first block not purged was handed out.
            let before_unpurged = ((first as u64) << BLOCK_BITS).saturating_sub(1);
            return Ok((start - 1).max(before_unpurged));
        };
        let (mut lo, mut step) = (first, 1i64);
        let mut hi = loop {
            match self.last_in_block(p, lo + step).await? {
                Some(seq) => {
                    (lo, head) = (lo + step, seq);
                    step = step.saturating_mul(2);
                }
                None => break lo + step,
            }
        };
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match self.last_in_block(p, mid).await? {
                Some(seq) => (lo, head) = (mid, seq),
                None => hi = mid,
            }
        }
        Ok(head)
    }

    async fn last_in_block(&self, p: u32, block: i64) -> Result<Option<u64>, StoreError> {
        let rows = self
            .exec(&self.upkeep_st.newest_in_block, (p as i32, block))
            .await?
            .into_rows_result()
            .map_err(be)?;
        Ok(rows
            .maybe_first_row::<(i64, Option<i32>, Option<String>)>()
            .map_err(be)?
            .map(|(s, _, _)| s as u64))
    }

    /// Bumps partition `p`'s epoch and answers where this owner's positions start.
    async fn claim_partition(&self, p: u32) -> Result<u64, StoreError> {
        for _ in 0..self.settings.max_lwt_rounds {
            let rows = self
                .exec(&self.st.read_log_partition, (p as i32,))
                .await?
                .into_rows_result()
                .map_err(be)?;
            let current = rows
                .maybe_first_row::<(Option<i64>, Option<i64>)>()
                .map_err(be)?;
            let epoch = current.and_then(|(e, _)| e).unwrap_or(0) + 1;
            let start = ((epoch as u64) << EPOCH_SHIFT) + 1;
            let claimed = match current {
                None => {
                    self.exec(&self.st.new_log_partition, (p as i32, epoch, start as i64))
                        .await?
                }
                Some(_) => {
                    self.exec(
                        &self.st.claim_log_partition,
                        (epoch, start as i64, p as i32, epoch - 1),
                    )
                    .await?
                }
            };
            if super::orders::applied(claimed)? {
                return Ok(start);
            }
        }
        Err(StoreError::Backend(format!(
            "log partition {p}: its epoch is contended (another paycore opening the log)"
        )))
    }

    async fn slot(&self, p: u32) -> Result<OwnedSemaphorePermit, StoreError> {
        let wait = Duration::from_millis(self.settings.request_timeout_ms);
        match tokio::time::timeout(wait, self.log.slots[p as usize].clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(StoreError::Overloaded),
        }
    }

    /// Step 1, before a change that writes `events` is written: its intent.
    pub(super) async fn log_intent(
        &self,
        order_id: &str,
        events: &[Event],
    ) -> Result<Option<Ticket>, StoreError> {
        if !self.log.owned.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::Backend(
                "this paycore opened the keyspace to read: it writes no change".into(),
            ));
        }
        if events.is_empty() {
            return Ok(None);
        }
        let p = partition_of(order_id);
        let slot = self.slot(p).await?;
        let mut intents: Vec<(u64, Option<String>)> = Vec::new();
        for e in events {
            if intents.last().is_none_or(|(v, _)| *v != e.version) {
                intents.push((e.version, Some(e.event_id.to_string())));
            }
        }
        for (v, id) in &intents {
            self.exec(
                &self.st.insert_intent,
                (p as i32, order_id, *v as i64, id.as_deref()),
            )
            .await?;
        }
        Ok(Some(Ticket {
            partition: p,
            order_id: order_id.to_string(),
            intents,
            _slot: slot,
        }))
    }

    /// A change that was not applied: its intent goes (best effort: one left behind is
    /// dropped by the next owner, finding no events).
    pub(super) async fn log_abandon(&self, ticket: Option<Ticket>) {
        #[cfg(test)]
        if self.skip_logging.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Some(t) = ticket {
            let _ = self.delete_intents(&t).await;
        }
    }

    async fn delete_intents(&self, t: &Ticket) -> Result<(), StoreError> {
        let (p, order) = (t.partition as i32, t.order_id.as_str());
        for (v, id) in &t.intents {
            match id {
                Some(id) => {
                    self.exec(&self.st.delete_intent, (p, order, *v as i64, id.as_str()))
                        .await?
                }
                None => {
                    self.exec(&self.st.delete_old_intent, (p, order, *v as i64))
                        .await?
                }
            };
        }
        Ok(())
    }

    /// Steps 2 and 3, once the change is applied: positions for its events, the log entries,
    /// the intent deleted. The change is durable already, so a failure here is retried in the
    /// background until the entries are written (the partition's stable position waits for
    /// them), and this answers `Ok`.
    pub(super) async fn log_committed(&self, ticket: Option<Ticket>, events: Vec<Event>) {
        let Some(ticket) = ticket else { return };
        #[cfg(test)]
        if self.skip_logging.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let seqs = self.hand_out(ticket.partition, events.len());
        if let Err(e) = self.write_entries(&ticket, &seqs, &events).await {
            tracing::error!(order_id = %ticket.order_id, error = %e,
                "logging a committed change failed; retrying in the background");
            let store = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    match store.write_entries(&ticket, &seqs, &events).await {
                        Ok(()) => break,
                        Err(e) => tracing::warn!(order_id = %ticket.order_id, error = %e,
                            "logging a committed change failed again"),
                    }
                }
                store.settle(ticket.partition, &seqs);
            });
            return;
        }
        self.settle(ticket.partition, &seqs);
    }

    /// A change whose write answered an error (a timeout says nothing of whether it was
    /// applied): settled in the background once the write can no longer be in flight (a
    /// request timeout later) by a SERIAL read of its versions in the order's partition, which
    /// also completes or supersedes a `conditional` write still in progress. Applied (its
    /// events stored there): they are logged as `log_committed` would have. Not applied and
    /// conditional: it never will be, and its intent is deleted. Otherwise (a plain write may
    /// still reach a replica late), or still unreadable after `SETTLE_ATTEMPTS` reads: the
    /// intent is left, and the next owner's recovery settles it.
    pub(super) fn log_unknown(
        &self,
        ticket: Option<Ticket>,
        events: Vec<Event>,
        conditional: bool,
    ) {
        let Some(ticket) = ticket else { return };
        let store = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(store.settings.request_timeout_ms)).await;
            for _ in 0..SETTLE_ATTEMPTS {
                match store.stored_versions(&ticket).await {
                    Ok(stored) => {
                        let ours = events
                            .iter()
                            .all(|e| stored.iter().any(|s| s.event_id == e.event_id));
                        if ours {
                            tracing::warn!(order_id = %ticket.order_id,
                                "a change whose write answered an error was applied: logging its events");
                            store.log_committed(Some(ticket), events).await;
                        } else if conditional && let Err(e) = store.delete_intents(&ticket).await {
                            tracing::warn!(order_id = %ticket.order_id, error = %e,
                                "the intent of a change not applied is left to the next owner");
                        }
                        return;
                    }
                    Err(StoreError::Closed) => return,
                    Err(e) => tracing::warn!(order_id = %ticket.order_id, error = %e,
                        "cannot read whether a change was applied; trying again"),
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            tracing::error!(order_id = %ticket.order_id,
                "whether a change was applied is still unknown; the next paycore to open the log settles it");
        });
    }

    /// The events the order's partition holds at the ticket's versions, read at SERIAL.
    async fn stored_versions(&self, t: &Ticket) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::new();
        for (v, _) in &t.intents {
            out.extend(self.events_at(true, &t.order_id, *v).await?);
        }
        Ok(out)
    }

    /// Logs `events` under `ticket` (recovery: positions, entries, intent deleted).
    async fn log_events(&self, ticket: Ticket, events: &[Event]) -> Result<(), StoreError> {
        let seqs = self.hand_out(ticket.partition, events.len());
        let written = self.write_entries(&ticket, &seqs, events).await;
        self.settle(ticket.partition, &seqs);
        written
    }

    fn hand_out(&self, p: u32, n: usize) -> Vec<u64> {
        let mut part = self.log.part(p);
        let first = part.next;
        part.next += n as u64;
        let seqs: Vec<u64> = (first..first + n as u64).collect();
        part.in_flight.extend(seqs.iter().copied());
        seqs
    }

    fn settle(&self, p: u32, seqs: &[u64]) {
        {
            let mut part = self.log.part(p);
            for s in seqs {
                part.in_flight.remove(s);
            }
            part.settle();
        }
        self.log.committed.send_modify(|n| *n = n.wrapping_add(1));
    }

    async fn write_entries(
        &self,
        t: &Ticket,
        seqs: &[u64],
        events: &[Event],
    ) -> Result<(), StoreError> {
        for (seq, e) in seqs.iter().zip(events) {
            self.exec(
                &self.st.insert_entry,
                (
                    t.partition as i32,
                    block_of(*seq),
                    *seq as i64,
                    e.order_id.as_str(),
                    e.event_id.as_str(),
                    e.version as i64,
                    i32::from(crate::streams::codec::SCHEMA_VERSION),
                    crate::streams::codec::encode_text(e),
                ),
            )
            .await?;
        }
        self.delete_intents(t).await
    }

    /// The events an order's partition holds at `version`.
    async fn events_at_version(
        &self,
        order_id: &str,
        version: u64,
    ) -> Result<Vec<Event>, StoreError> {
        self.events_at(false, order_id, version).await
    }

    /// The events an order's partition holds at `version`, read at SERIAL when `serial`.
    async fn events_at(
        &self,
        serial: bool,
        order_id: &str,
        version: u64,
    ) -> Result<Vec<Event>, StoreError> {
        let from = format!("e:{version:020}:");
        let to = format!("e:{version:020};");
        let st = if serial {
            &self.st.events_at_version_serial
        } else {
            &self.st.events_at_version
        };
        let rows = self
            .exec(st, (order_id, from, to))
            .await?
            .into_rows_result()
            .map_err(be)?;
        rows.rows::<(Option<i32>, Option<String>)>()
            .map_err(be)?
            .map(|r| {
                let (schema, body) = r.map_err(be)?;
                decode(schema, body)
            })
            .collect()
    }
}

pub(super) fn decode(schema: Option<i32>, body: Option<String>) -> Result<Event, StoreError> {
    let (Some(schema), Some(body)) = (schema, body) else {
        return Err(StoreError::Corrupt("event row without its event".into()));
    };
    let schema =
        u16::try_from(schema).map_err(|_| StoreError::Corrupt(format!("event schema {schema}")))?;
    crate::streams::codec::decode(schema, body.as_bytes())
        .map_err(|e| StoreError::Corrupt(format!("event body: {e}")))
}

#[async_trait]
impl EventLog for ScyllaStore {
    fn log_partitions(&self) -> u32 {
        PARTITIONS
    }

    fn watch_commits(&self) -> watch::Receiver<u64> {
        self.watch_events_committed()
    }

    /// Positions of one epoch are consecutive, so within it the lag is their difference. A
    /// cursor in an earlier epoch (a restart since) is behind by every position of the head's
    /// epoch so far; what of the earlier epoch it has not read yet is not counted.
    fn lag(&self, cursor: u64, head: u64) -> u64 {
        let (c, h) = (cursor >> EPOCH_SHIFT, head >> EPOCH_SHIFT);
        if c >= h {
            head.saturating_sub(cursor)
        } else {
            head - (h << EPOCH_SHIFT)
        }
    }

    async fn events_after(
        &self,
        partition: u32,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        check_partition(partition)?;
        let stable = self.log.stable(partition);
        let mut out = Vec::new();
        if seq >= stable {
            return Ok(out);
        }
        let (mut after, mut block, last) = (seq, block_of(seq + 1), block_of(stable));
        while block <= last && out.len() < limit {
            let want = limit - out.len();
            let rows = self
                .exec(
                    &self.st.read_entries,
                    (
                        partition as i32,
                        block,
                        after as i64,
                        stable as i64,
                        i32::try_from(want).unwrap_or(i32::MAX),
                    ),
                )
                .await?
                .into_rows_result()
                .map_err(be)?;
            let mut read = 0;
            for row in rows
                .rows::<(i64, Option<i32>, Option<String>)>()
                .map_err(be)?
            {
                let (at, schema, body) = row.map_err(be)?;
                let event = decode(schema, body)?;
                let encoded: Arc<[u8]> = Arc::from(crate::streams::codec::encode(&event));
                after = at as u64;
                read += 1;
                out.push(StoredEvent {
                    partition,
                    seq: at as u64,
                    event: Arc::new(event),
                    encoded,
                });
            }
            block = if read == 0 {
                // Below the stable position an empty block is past its epoch's end.
                let next_epoch = ((after >> EPOCH_SHIFT) + 1) << EPOCH_SHIFT;
                after = after.max(next_epoch);
                block_of(next_epoch).max(block + 1)
            } else if read < want {
                block + 1
            } else {
                block
            };
        }
        Ok(out)
    }

    async fn cursor(&self, name: &str, partition: u32) -> Result<u64, StoreError> {
        let rows = self
            .exec(&self.st.cursor_get, (name, partition as i32))
            .await?
            .into_rows_result()
            .map_err(be)?;
        Ok(rows
            .maybe_first_row::<(Option<i64>,)>()
            .map_err(be)?
            .and_then(|(s,)| s)
            .map_or(0, |s| s as u64))
    }

    async fn set_cursor(&self, name: &str, partition: u32, seq: u64) -> Result<(), StoreError> {
        // An LWT per move (a consumer moves once per batch): a cursor never moves back, and a
        // move, a registration and a drop are linearizable.
        for _ in 0..self.settings.max_lwt_rounds {
            let moved = super::orders::Lwt::read(
                self.exec(
                    &self.st.cursor_set,
                    (seq as i64, name, partition as i32, seq as i64),
                )
                .await?,
            )?;
            if moved.applied || moved.get("seq").is_some() {
                // Moved, or already at or past `seq`.
                return Ok(());
            }
            let made = self
                .exec(&self.st.cursor_insert, (name, partition as i32, seq as i64))
                .await?;
            if super::orders::applied(made)? {
                return Ok(());
            }
        }
        Err(StoreError::Backend(format!(
            "cursor {name} in partition {partition} is contended"
        )))
    }

    async fn register_cursor(&self, name: &str) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::with_capacity(PARTITIONS as usize);
        for p in 0..PARTITIONS {
            let head = self.log.stable(p);
            let made = super::orders::Lwt::read(
                self.exec(&self.st.cursor_insert, (name, p as i32, head as i64))
                    .await?,
            )?;
            let seq = if made.applied {
                head
            } else {
                match made.get("seq") {
                    Some(scylla::value::CqlValue::BigInt(s)) => *s as u64,
                    _ => head,
                }
            };
            out.push(seq);
        }
        Ok(out)
    }

    async fn drop_cursor(&self, name: &str) -> Result<(), StoreError> {
        for p in 0..PARTITIONS {
            self.exec(&self.st.cursor_drop, (name, p as i32)).await?;
        }
        Ok(())
    }

    async fn orders_being_logged(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for p in 0..PARTITIONS {
            for st in [&self.st.read_intents, &self.st.read_old_intents] {
                let rows = self
                    .exec(st, (p as i32,))
                    .await?
                    .into_rows_result()
                    .map_err(be)?;
                for row in rows.rows::<scylla::value::Row>().map_err(be)? {
                    let row = row.map_err(be)?;
                    if let Some(Some(scylla::value::CqlValue::Text(id))) = row.columns.first() {
                        out.push(id.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    async fn cursors(&self) -> Result<(Vec<(String, Position)>, Vec<u64>), StoreError> {
        let heads: Vec<u64> = (0..PARTITIONS).map(|p| self.log.stable(p)).collect();
        let rows = self
            .exec(&self.st.cursors_all, ())
            .await?
            .into_rows_result()
            .map_err(be)?;
        let mut out = Vec::new();
        for row in rows.rows::<(String, i32, Option<i64>)>().map_err(be)? {
            let (name, partition, seq) = row.map_err(be)?;
            if let Some(seq) = seq {
                out.push((
                    name,
                    Position {
                        partition: partition as u32,
                        seq: seq as u64,
                    },
                ));
            }
        }
        out.sort();
        Ok((out, heads))
    }
}
