//! Timers in CQL. An order's timers are clustering rows of its own partition (`t:<kind>`), set
//! and cleared in the same batch as the change that needs them. When they are due is kept in
//! `timer_index`, partitioned by (shard of the order, due minute), so the scheduler reads only
//! the minutes that are due, never a table scan.
//!
//! - An index entry is written *before* the order's batch (plain, idempotent). If the batch
//!   then fails, the entry is stale; every entry is checked against the order's own timer row
//!   when it comes due (same attempt, and the row due no later than the entry), and a stale one
//!   is deleted then, once it is older than the store's grace (`may_be_in_flight`): a younger
//!   one may be ahead of a batch not answered yet, and is passed over until then. An entry
//!   only wakes the order, whose state machine decides: firing twice is harmless.
//! - A claim leases a timer by moving its index entry to `lease_until` (insert, then delete):
//!   the order's row is not written, so a claim is no LWT.
//! - No entry is written into a minute bucket older than the one before the writer's current
//!   minute, and the scheduler's watermark passes only buckets at least two minutes old that it
//!   read empty: an entry in flight always lands in a bucket the watermark has not passed.

use super::{ScyllaStore, be, from_ms, ms, now_ms};
use crate::domain::{OrderId, Timer, TimerKind, TimerOp};
use crate::storage::{StoreError, TimerStore};
use async_trait::async_trait;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use time::OffsetDateTime;

/// Shards of the timer index (and, later, of the log): fixed, since an order's shard is
/// derived from its id. Changing it is a migration.
pub const SHARDS: u32 = 8;
/// Width of one index bucket.
const BUCKET_MS: i64 = 60_000;
/// Most buckets one claim reads per shard (a watermark far behind, after a long stop, is
/// caught up over several claims).
pub(super) const MAX_BUCKETS_PER_CLAIM: i64 = 120;
/// Entries a claim reads per shard beyond its page: room for entries passed over (young ones
/// that match no row yet, see `may_be_in_flight`) or dropped as stale, so a few of them ahead
/// do not shorten the page of due timers behind them.
const PASSED_OVER_ALLOWANCE: usize = 64;

/// The shard of an order: FNV-1a of its id.
pub fn shard_of(order_id: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in order_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % SHARDS) as i32
}

pub(super) fn bucket_of(due_ms: i64) -> i64 {
    due_ms.div_euclid(BUCKET_MS)
}

/// The bucket an entry due at `due_ms` is written to, written now.
pub(super) fn write_bucket(due_ms: i64) -> i64 {
    bucket_of(due_ms).max(bucket_of(now_ms()) - 1)
}

/// A due-time index entry.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub shard: i32,
    pub bucket: i64,
    pub due_ms: i64,
    pub order_id: String,
    pub kind: TimerKind,
    pub attempt: i32,
    /// When it was written (`WRITETIME`, µs), as read by a claim; `None` for one made here.
    pub written_us: Option<i64>,
}

impl Entry {
    pub fn new(order_id: &str, kind: TimerKind, due_ms: i64, attempt: u32) -> Self {
        Self {
            shard: shard_of(order_id),
            bucket: write_bucket(due_ms),
            due_ms,
            order_id: order_id.to_string(),
            kind,
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
            written_us: None,
        }
    }

    /// The entries a set of timer changes needs (those that set a timer).
    pub fn for_ops(order_id: &str, ops: &[TimerOp]) -> Vec<Self> {
        ops.iter()
            .filter_map(|op| match *op {
                TimerOp::Set {
                    kind,
                    due_at,
                    attempt,
                }
                | TimerOp::Ensure {
                    kind,
                    due_at,
                    attempt,
                } => Some(Self::new(order_id, kind, ms(due_at), attempt)),
                TimerOp::Clear(_) => None,
            })
            .collect()
    }
}

fn item(kind: TimerKind) -> String {
    format!("t:{}", kind.as_str())
}

impl ScyllaStore {
    /// Writes index entries (before the writes that set their timers).
    pub(super) async fn index(&self, entries: &[Entry]) -> Result<(), StoreError> {
        for e in entries {
            self.exec(
                &self.st.index_timer,
                (
                    e.shard,
                    e.bucket,
                    CqlTimestamp(e.due_ms),
                    e.order_id.as_str(),
                    e.kind.as_str(),
                    e.attempt,
                ),
            )
            .await?;
        }
        Ok(())
    }

    async fn unindex(&self, e: &Entry) -> Result<(), StoreError> {
        self.exec(
            &self.st.unindex_timer,
            (
                e.shard,
                e.bucket,
                CqlTimestamp(e.due_ms),
                e.order_id.as_str(),
                e.kind.as_str(),
            ),
        )
        .await?;
        Ok(())
    }

    /// Test hook: a timer's index entry alone, as a write that sets the timer whose row write
    /// has not answered yet.
    #[cfg(test)]
    pub(super) async fn index_timer_only(
        &self,
        order_id: &OrderId,
        kind: TimerKind,
        due_at: OffsetDateTime,
        attempt: u32,
    ) -> Result<(), StoreError> {
        self.index(&[Entry::new(order_id.as_str(), kind, ms(due_at), attempt)])
            .await
    }

    /// Test hook: the rest of that write, the timer's row without its entry.
    #[cfg(test)]
    pub(super) async fn set_timer_row_only(
        &self,
        order_id: &OrderId,
        kind: TimerKind,
        due_at: OffsetDateTime,
        attempt: u32,
    ) -> Result<(), StoreError> {
        let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
        let due = CqlTimestamp(ms(due_at));
        self.exec(
            &self.st.set_timer,
            (order_id.as_str(), item(kind), due, attempt),
        )
        .await?;
        Ok(())
    }

    /// The order's timer row of `kind`: (due, attempt).
    async fn timer_row(
        &self,
        order_id: &str,
        kind: TimerKind,
    ) -> Result<Option<(i64, i32)>, StoreError> {
        let rows = self
            .exec(&self.st.read_timer, (order_id, item(kind)))
            .await?
            .into_rows_result()
            .map_err(be)?;
        Ok(rows
            .maybe_first_row::<(Option<CqlTimestamp>, Option<i32>)>()
            .map_err(be)?
            .and_then(|(due, attempt)| Some((due?.0, attempt?))))
    }

    /// Due entries of one shard, earliest first, at most `limit`; advances the shard's
    /// watermark past old buckets read empty.
    async fn due_in_shard(
        &self,
        shard: i32,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let marks = &self.timer_marks;
        self.scan_due(
            marks,
            &self.st.due_in_bucket,
            shard,
            now_ms,
            limit,
            |bucket, row| {
                let (due, order_id, kind, attempt, written_us): (
                    CqlTimestamp,
                    String,
                    String,
                    Option<i32>,
                    Option<i64>,
                ) = row;
                let Some(kind) = TimerKind::parse(&kind) else {
                    tracing::error!(%order_id, %kind, "unreadable timer index entry skipped");
                    return None;
                };
                Some(Entry {
                    shard,
                    bucket,
                    due_ms: due.0,
                    order_id,
                    kind,
                    attempt: attempt.unwrap_or(-1),
                    written_us,
                })
            },
        )
        .await
    }

    /// The scan of a due index (the timers' or the notifications'), one shard: its buckets
    /// from the watermark to `now_ms`'s (at most `MAX_BUCKETS_PER_CLAIM`), rows due by
    /// `now_ms`, at most `limit`, each made an entry by `entry` (`None`: skipped). The
    /// watermark moves past old buckets read empty: only buckets at least two minutes old by
    /// the claim's time and by the wall clock, which writers no longer write to.
    pub(super) async fn scan_due<R, E>(
        &self,
        marks: &Watermarks,
        due_in_bucket: &PreparedStatement,
        shard: i32,
        now_ms: i64,
        limit: usize,
        mut entry: impl FnMut(i64, R) -> Option<E>,
    ) -> Result<Vec<E>, StoreError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let now_bucket = bucket_of(now_ms);
        let watermark = self.watermark(marks, shard).await?;
        // Buckets before this one were read empty (and are passed for good).
        let mut passed = watermark;
        let mut out = Vec::new();
        let last = now_bucket.min(watermark + MAX_BUCKETS_PER_CLAIM);
        for bucket in watermark..=last {
            let want = limit - out.len();
            let rows = self
                .exec(
                    due_in_bucket,
                    (
                        shard,
                        bucket,
                        CqlTimestamp(now_ms),
                        i32::try_from(want).unwrap_or(i32::MAX),
                    ),
                )
                .await?
                .into_rows_result()
                .map_err(be)?;
            let mut read = 0;
            for row in rows.rows::<R>().map_err(be)? {
                read += 1;
                out.extend(entry(bucket, row.map_err(be)?));
            }
            let settled = now_bucket.min(bucket_of(super::now_ms())) - 2;
            if read == 0 && bucket == passed && bucket <= settled {
                passed = bucket + 1;
                self.advance_watermark(marks, shard, passed).await?;
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// A shard's watermark in `marks`, read once.
    pub(super) async fn watermark(
        &self,
        marks: &Watermarks,
        shard: i32,
    ) -> Result<i64, StoreError> {
        if let Some(Some(w)) = marks.lock().get(shard as usize) {
            return Ok(*w);
        }
        let rows = self
            .exec(&marks.read, (shard,))
            .await?
            .into_rows_result()
            .map_err(be)?;
        let w = rows
            .maybe_first_row::<(Option<i64>,)>()
            .map_err(be)?
            .and_then(|(b,)| b)
            .ok_or_else(|| {
                StoreError::Corrupt(format!("{} shard {shard} has no watermark", marks.table))
            })?;
        marks.lock()[shard as usize] = Some(w);
        Ok(w)
    }

    async fn advance_watermark(
        &self,
        marks: &Watermarks,
        shard: i32,
        to: i64,
    ) -> Result<(), StoreError> {
        self.exec(&marks.set, (to, shard)).await?;
        marks.lock()[shard as usize] = Some(to);
        Ok(())
    }
}

/// A due index's per-shard watermarks (a `<table>` of (shard, bucket)): the oldest minute
/// bucket that may still hold entries, cached in this process once read.
pub(super) struct Watermarks {
    table: &'static str,
    read: PreparedStatement,
    set: PreparedStatement,
    cache: std::sync::Mutex<Vec<Option<i64>>>,
}

impl Watermarks {
    /// Prepares the statements of `table` and makes sure every shard has a watermark (the
    /// minute before now for a new keyspace).
    pub(super) async fn open(
        session: &scylla::client::session::Session,
        serial: scylla::statement::SerialConsistency,
        table: &'static str,
    ) -> Result<Self, StoreError> {
        let p = |cql: String| async move { session.prepare(cql).await.map_err(be) };
        let init = super::lwt(
            p(format!(
                "INSERT INTO {table} (shard, bucket) VALUES (?, ?) IF NOT EXISTS"
            ))
            .await?,
            serial,
        );
        let start = bucket_of(now_ms()) - 1;
        for shard in 0..SHARDS as i32 {
            session
                .execute_unpaged(&init, (shard, start))
                .await
                .map_err(be)?;
        }
        Ok(Self {
            table,
            read: super::plain(p(format!("SELECT bucket FROM {table} WHERE shard = ?")).await?),
            set: super::plain(p(format!("UPDATE {table} SET bucket = ? WHERE shard = ?")).await?),
            cache: std::sync::Mutex::new(vec![None; SHARDS as usize]),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<i64>>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl TimerStore for ScyllaStore {
    async fn write_timers(&self, order_id: &OrderId, ops: Vec<TimerOp>) -> Result<(), StoreError> {
        let id = order_id.as_str();
        self.index(&Entry::for_ops(id, &ops)).await?;
        for op in ops {
            match op {
                TimerOp::Set {
                    kind,
                    due_at,
                    attempt,
                } => {
                    self.exec(
                        &self.st.set_timer,
                        (
                            id,
                            item(kind),
                            CqlTimestamp(ms(due_at)),
                            i32::try_from(attempt).unwrap_or(i32::MAX),
                        ),
                    )
                    .await?;
                }
                TimerOp::Ensure {
                    kind,
                    due_at,
                    attempt,
                } => {
                    self.exec(
                        &self.st.ensure_timer,
                        (
                            id,
                            item(kind),
                            CqlTimestamp(ms(due_at)),
                            i32::try_from(attempt).unwrap_or(i32::MAX),
                        ),
                    )
                    .await?;
                }
                TimerOp::Clear(kind) => {
                    self.exec(&self.st.clear_timer, (id, item(kind))).await?;
                }
            }
        }
        Ok(())
    }

    async fn reschedule_timer(
        &self,
        order_id: &OrderId,
        kind: TimerKind,
        fired_attempt: u32,
        next: Option<TimerOp>,
    ) -> Result<(), StoreError> {
        let id = order_id.as_str();
        let fired = i32::try_from(fired_attempt).unwrap_or(i32::MAX);
        let next = match next {
            Some(TimerOp::Set {
                kind: next_kind,
                due_at,
                attempt,
            }) if next_kind == kind => Some((due_at, attempt)),
            None | Some(TimerOp::Clear(_)) => None,
            Some(other) => {
                return Err(StoreError::Backend(format!(
                    "a {} timer cannot be rescheduled as {other:?}",
                    kind.as_str()
                )));
            }
        };
        match next {
            Some((due_at, attempt)) => {
                self.index(&[Entry::new(id, kind, ms(due_at), attempt)])
                    .await?;
                self.exec(
                    &self.st.reschedule_timer,
                    (
                        CqlTimestamp(ms(due_at)),
                        i32::try_from(attempt).unwrap_or(i32::MAX),
                        id,
                        item(kind),
                        fired,
                    ),
                )
                .await?;
            }
            None => {
                self.exec(&self.st.clear_fired_timer, (id, item(kind), fired))
                    .await?;
            }
        }
        // Not applied: the timer was set again meanwhile, and is left alone.
        Ok(())
    }

    async fn claim_due_timers(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Timer>, StoreError> {
        let now_ms = ms(now);
        let mut due = Vec::new();
        for shard in 0..SHARDS as i32 {
            let scan = limit.saturating_add(PASSED_OVER_ALLOWANCE);
            due.extend(self.due_in_shard(shard, now_ms, scan).await?);
        }
        due.sort_by(|a, b| (a.due_ms, &a.order_id).cmp(&(b.due_ms, &b.order_id)));
        // Read on past entries passed over or dropped, so that stale ones ahead do not
        // shorten the page.
        let mut claimed = Vec::with_capacity(due.len().min(limit));
        for entry in due {
            if claimed.len() >= limit {
                break;
            }
            let current = self.timer_row(&entry.order_id, entry.kind).await?;
            let live = current.is_some_and(|(row_due, attempt)| {
                attempt == entry.attempt && row_due <= entry.due_ms
            });
            if !live && self.may_be_in_flight(entry.written_us) {
                // Perhaps ahead of its row (the write that sets the timer not answered yet):
                // left for a later claim, which deletes it once it is old and still stale.
                continue;
            }
            if live {
                let leased = Entry {
                    bucket: write_bucket(ms(lease_until)),
                    due_ms: ms(lease_until),
                    ..entry.clone()
                };
                self.index(std::slice::from_ref(&leased)).await?;
            }
            self.unindex(&entry).await?;
            if !live {
                continue;
            }
            let Ok(order_id) = OrderId::parse(&entry.order_id) else {
                tracing::error!(order_id = %entry.order_id, "unreadable timer entry dropped");
                continue;
            };
            claimed.push(Timer {
                order_id,
                kind: entry.kind,
                due_at: from_ms(entry.due_ms),
                attempt: u32::try_from(entry.attempt).unwrap_or(0),
            });
        }
        Ok(claimed)
    }

    async fn timer_counts(
        &self,
        overdue_before: OffsetDateTime,
        pending_before: OffsetDateTime,
    ) -> Result<(i64, i64), StoreError> {
        let (overdue_ms, pending_ms) = (ms(overdue_before), ms(pending_before));
        let (mut pending, mut overdue) = (0, 0);
        for shard in 0..SHARDS as i32 {
            let from = self.watermark(&self.timer_marks, shard).await?;
            let to = bucket_of(pending_ms).min(from + 24 * 60);
            for (bound, total) in [(pending_ms, &mut pending), (overdue_ms, &mut overdue)] {
                let last = to.min(bucket_of(bound));
                if last < from {
                    continue;
                }
                *total += self
                    .count_in_buckets(&self.st.count_in_buckets, from, last, |buckets| {
                        (shard, buckets, CqlTimestamp(bound))
                    })
                    .await?;
            }
        }
        Ok((pending, overdue))
    }

    async fn orders_without_timers(
        &self,
        after: Option<OrderId>,
        limit: usize,
    ) -> Result<(Vec<OrderId>, Option<OrderId>), StoreError> {
        let n = i32::try_from(limit).unwrap_or(i32::MAX);
        let result = match &after {
            Some(after) => {
                self.exec(&self.st.scan_orders_after, (after.as_str(), n))
                    .await
            }
            None => self.exec(&self.st.scan_orders, (n,)).await,
        }
        .map_err(be)?
        .into_rows_result()
        .map_err(be)?;
        let scanned: Vec<(String, Option<bool>)> = result
            .rows::<(String, Option<bool>)>()
            .map_err(be)?
            .collect::<Result<_, _>>()
            .map_err(be)?;
        let mut found = Vec::new();
        for (id, open_work) in &scanned {
            if open_work != &Some(true) {
                continue;
            }
            if self.timer_kinds(id).await?.is_empty()
                && let Ok(id) = OrderId::parse(id)
            {
                found.push(id);
            }
        }
        let next = if scanned.len() == limit {
            scanned.last().and_then(|(id, _)| OrderId::parse(id).ok())
        } else {
            None
        };
        Ok((found, next))
    }
}
