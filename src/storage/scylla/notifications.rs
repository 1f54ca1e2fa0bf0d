//! Merchant notifications in CQL (migration 3).
//!
//! - `notifications`: one partition per order (keyed by the order id, shared/DESIGN.md "one
//!   owner per order"), a clustering row per notification by (version, notification id), with
//!   its delivery state. Every write to a row is an LWT (its insert `IF NOT EXISTS`, a lease,
//!   an outcome, a redelivery), so the writes to one row are linearizable and never mix plain
//!   and Paxos timestamps.
//! - `notification_ids`: notification id → (order, version, merchant), written (plain, before
//!   the row) so `record_delivery` and `redeliver`, which know only the id, find the row.
//! - `notification_due`: when notifications are due, partitioned by (shard of the order, due
//!   minute) like `timer_index`, with its own per-shard watermark (`notification_watermarks`,
//!   made when the store opens) and the timers' bucket rules (`timers::write_bucket`: no entry
//!   lands in a bucket the watermark may have passed). An entry only points at a notification
//!   (and names its merchant, so a saturated merchant's entries are passed over unread). It is
//!   written *before* the row write that needs it; a claim checks it against the row, which
//!   must be PENDING and due, no later than the entry; a stale entry is deleted then, once it
//!   is older than the store's grace (`may_be_in_flight`): a younger one may be ahead of a
//!   row write not answered yet (an enqueue's insert, a retry's or a redelivery's update), and
//!   is passed over until then.
//!
//! A claim reads the due entries of every shard (at most `limit * CLAIM_SCAN_FACTOR` per
//! shard), earliest first, and for each reads the order's partition: an entry whose order has
//! an earlier version still PENDING is moved to when that one is next due (so the watermark is
//! not held and the entry is not read again meanwhile); otherwise the row is leased by one LWT
//! `IF status = 'PENDING' AND attempts = ? AND next_attempt_at = ?` (the values read), so two
//! claimers never both get it, after its entry at `lease_until` is written. An outcome that ends
//! a notification (DELIVERED or DEAD) then indexes the order's later PENDING rows at their due
//! time, so the next version goes out at once.
//!
//! Reads are plain (at `consistency`) where a stale answer only delays (a blocker seen PENDING
//! that just ended: the entry waits for the next claim) or the LWT after it decides; where a
//! stale answer would drop something (a due entry judged stale, an outcome judged late, a
//! redelivery judged needless) the row is read at SERIAL first.
//!
//! Enqueue: per notification the due entry, the lookup row, then the row `IF NOT EXISTS` (one
//! already stored is left as it is; the entry just written for it is stale and dropped by a
//! claim once past the grace), then the notifier's cursor is moved (an LWT `IF seq < ?`, never
//! back). Not atomic across partitions: a crash before the cursor moved redoes the enqueue,
//! which changes nothing stored.
//!
//! `pending_notifications` is derived from the due index: the entries of every shard from its
//! watermark through the next 24 h of buckets. That is the PENDING notifications (due, leased,
//! retrying, or waiting behind an earlier version), counting twice one with a second entry (an
//! enqueue redone, or a claim that lost its LWT) and counting an ended one whose lease entry
//! could not be deleted, until a claim reaches those entries; one due more than 24 h past the
//! watermark is not counted.

use super::timers::{bucket_of, shard_of, write_bucket};
use super::{ScyllaStore, be, from_ms, ms, now_ms};
use crate::domain::notification::{DeliveryOutcome, Notification, NotificationStatus};
use crate::domain::{EventId, MerchantId, NotificationId, OrderId};
use crate::storage::{EventLog, MerchantRoom, NotificationStore, StoreError};
use async_trait::async_trait;
use scylla::client::session::Session;
use scylla::statement::SerialConsistency;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use std::collections::HashMap;
use time::OffsetDateTime;

/// The migration's statements (`{ks}` is the keyspace).
pub(super) const DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS {ks}.notifications (
        order_id        text,
        version         bigint,
        notification_id text,
        merchant_id     text,
        event_id        text,
        event_type      text,
        url             text,
        body            blob,
        status          text,
        attempts        int,
        schedule_pos    int,
        last_status     int,
        last_error      text,
        next_attempt_at timestamp,
        created_at      timestamp,
        updated_at      timestamp,
        PRIMARY KEY (order_id, version, notification_id)
    ) WITH CLUSTERING ORDER BY (version ASC, notification_id ASC)",
    "CREATE TABLE IF NOT EXISTS {ks}.notification_ids (
        notification_id text PRIMARY KEY,
        order_id        text,
        version         bigint,
        merchant_id     text
    )",
    "CREATE TABLE IF NOT EXISTS {ks}.notification_due (
        shard           int,
        bucket          bigint,
        due_at          timestamp,
        order_id        text,
        version         bigint,
        notification_id text,
        merchant_id     text,
        PRIMARY KEY ((shard, bucket), due_at, order_id, version, notification_id)
    )",
    "CREATE TABLE IF NOT EXISTS {ks}.notification_watermarks (
        shard  int PRIMARY KEY,
        bucket bigint
    )",
];

/// How many due entries a claim may read per shard for each notification it takes: entries of
/// merchants out of room, stale ones and ones waiting behind an earlier version are passed
/// over, and this bounds that.
const CLAIM_SCAN_FACTOR: usize = 8;
/// Most notification rows read from one order's partition.
const MAX_PER_ORDER: i32 = 1_000;
/// Buckets past the watermark `pending_notifications` counts (24 h).
const COUNT_BUCKETS: i64 = 24 * 60;

/// The columns `decode` reads, in its order.
const COLUMNS: &str = "notification_id, order_id, merchant_id, event_id, event_type, version, \
     url, body, status, attempts, schedule_pos, last_status, last_error, next_attempt_at, \
     created_at";

type RowTuple = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
    Option<Vec<u8>>,
    Option<String>,
    Option<i32>,
    Option<i32>,
    Option<i32>,
    Option<String>,
    Option<CqlTimestamp>,
    Option<CqlTimestamp>,
);

fn corrupt(what: &str, v: &str) -> StoreError {
    StoreError::Corrupt(format!("notification {what} {v:?}"))
}

fn decode(r: RowTuple) -> Result<Notification, StoreError> {
    let (id, order, merchant, event, kind, version, url, body, status) =
        (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8);
    let merchant = merchant.unwrap_or_default();
    let event = event.unwrap_or_default();
    let status = status.unwrap_or_default();
    Ok(Notification {
        notification_id: NotificationId::parse(&id).map_err(|_| corrupt("id", &id))?,
        order_id: OrderId::parse(&order).map_err(|_| corrupt("order id", &order))?,
        merchant_id: MerchantId::parse(&merchant).map_err(|_| corrupt("merchant", &merchant))?,
        event_id: EventId::parse(&event).map_err(|_| corrupt("event id", &event))?,
        event_type: kind.unwrap_or_default(),
        version: version as u64,
        url: url.unwrap_or_default(),
        body: body.unwrap_or_default(),
        status: NotificationStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        attempts: r.9.and_then(|a| u32::try_from(a).ok()).unwrap_or(0),
        schedule_pos: r.10.and_then(|a| u32::try_from(a).ok()).unwrap_or(0),
        last_status: r.11.and_then(|s| u16::try_from(s).ok()),
        last_error: r.12,
        next_attempt_at: from_ms(r.13.map_or(0, |t| t.0)),
        created_at: from_ms(r.14.map_or(0, |t| t.0)),
    })
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A due-index entry.
#[derive(Debug, Clone)]
struct Entry {
    shard: i32,
    bucket: i64,
    due_ms: i64,
    order_id: String,
    version: i64,
    id: String,
    merchant: String,
    /// When it was written (`WRITETIME`, µs), as read by a claim; `None` for one made here.
    written_us: Option<i64>,
}

impl Entry {
    /// The entry pointing at `n`, due at `due_ms`, written now.
    fn new(n: &Notification, due_ms: i64) -> Self {
        Self {
            shard: shard_of(n.order_id.as_str()),
            bucket: write_bucket(due_ms),
            due_ms,
            order_id: n.order_id.to_string(),
            version: n.version as i64,
            id: n.notification_id.to_string(),
            merchant: n.merchant_id.to_string(),
            written_us: None,
        }
    }

    /// The same notification, due at `due_ms` instead.
    fn moved(&self, due_ms: i64) -> Self {
        Self {
            bucket: write_bucket(due_ms),
            due_ms,
            ..self.clone()
        }
    }
}

/// This module's prepared statements, and the due index's watermarks once read.
pub(super) struct Statements {
    insert_lookup: PreparedStatement,
    read_lookup: PreparedStatement,
    insert_row: PreparedStatement,
    read_row: PreparedStatement,
    read_row_serial: PreparedStatement,
    order_rows: PreparedStatement,
    lease: PreparedStatement,
    record_retry: PreparedStatement,
    record_final: PreparedStatement,
    redeliver: PreparedStatement,
    index: PreparedStatement,
    unindex: PreparedStatement,
    due_in_bucket: PreparedStatement,
    count_in_buckets: PreparedStatement,
    /// Per shard, the oldest minute bucket that may hold due entries.
    marks: super::timers::Watermarks,
}

impl Statements {
    /// Prepares the statements and makes sure every shard of the due index has a watermark
    /// (the minute before now for a new keyspace), as the store opens.
    pub(super) async fn prepare(
        session: &Session,
        serial: SerialConsistency,
    ) -> Result<Self, StoreError> {
        use super::plain;
        let lwt = |p| super::lwt(p, serial);
        let serial_read = |p| super::serial_read(p, serial);
        let p = |cql: String| async move { session.prepare(cql).await.map_err(be) };
        let keys = "WHERE order_id = ? AND version = ? AND notification_id = ?";
        Ok(Self {
            insert_lookup: plain(
                p("INSERT INTO notification_ids (notification_id, order_id, version, merchant_id) \
                   VALUES (?, ?, ?, ?)"
                    .into())
                .await?,
            ),
            read_lookup: plain(
                p("SELECT order_id, version, merchant_id FROM notification_ids \
                   WHERE notification_id = ?"
                    .into())
                .await?,
            ),
            insert_row: lwt(p("INSERT INTO notifications (order_id, version, notification_id, \
                   merchant_id, event_id, event_type, url, body, status, attempts, schedule_pos, \
                   next_attempt_at, created_at, updated_at) \
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', 0, 0, ?, ?, ?) IF NOT EXISTS"
                .into())
            .await?),
            read_row: plain(p(format!("SELECT {COLUMNS} FROM notifications {keys}")).await?),
            read_row_serial: serial_read(
                p(format!("SELECT {COLUMNS} FROM notifications {keys}")).await?,
            ),
            order_rows: plain(
                p(format!(
                    "SELECT {COLUMNS} FROM notifications WHERE order_id = ? LIMIT ?"
                ))
                .await?,
            ),
            lease: lwt(p(format!(
                "UPDATE notifications SET next_attempt_at = ? {keys} \
                 IF status = 'PENDING' AND attempts = ? AND next_attempt_at = ?"
            ))
            .await?),
            record_retry: lwt(p(format!(
                "UPDATE notifications SET status = 'PENDING', attempts = ?, next_attempt_at = ?, \
                 schedule_pos = ?, last_status = ?, last_error = ?, updated_at = ? {keys} \
                 IF status = 'PENDING' AND attempts = ?"
            ))
            .await?),
            record_final: lwt(p(format!(
                "UPDATE notifications SET status = ?, attempts = ?, last_status = ?, \
                 last_error = ?, updated_at = ? {keys} IF status = 'PENDING' AND attempts = ?"
            ))
            .await?),
            redeliver: lwt(p(format!(
                "UPDATE notifications SET status = 'PENDING', next_attempt_at = ?, \
                 schedule_pos = 0, updated_at = ? {keys} IF status IN ('DELIVERED', 'DEAD')"
            ))
            .await?),
            index: plain(
                p("INSERT INTO notification_due (shard, bucket, due_at, order_id, version, \
                   notification_id, merchant_id) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    .into())
                .await?,
            ),
            unindex: plain(
                p("DELETE FROM notification_due WHERE shard = ? AND bucket = ? AND due_at = ? \
                   AND order_id = ? AND version = ? AND notification_id = ?"
                    .into())
                .await?,
            ),
            due_in_bucket: plain(
                p("SELECT due_at, order_id, version, notification_id, merchant_id, \
                   WRITETIME(merchant_id) FROM notification_due \
                   WHERE shard = ? AND bucket = ? AND due_at <= ? LIMIT ?"
                    .into())
                .await?,
            ),
            count_in_buckets: plain(
                p("SELECT COUNT(*) FROM notification_due WHERE shard = ? AND bucket IN ?".into())
                    .await?,
            ),
            marks: super::timers::Watermarks::open(session, serial, "notification_watermarks")
                .await?,
        })
    }
}

impl ScyllaStore {
    async fn notify_index(&self, e: &Entry) -> Result<(), StoreError> {
        self.exec(
            &self.notify_st.index,
            (
                e.shard,
                e.bucket,
                CqlTimestamp(e.due_ms),
                e.order_id.as_str(),
                e.version,
                e.id.as_str(),
                e.merchant.as_str(),
            ),
        )
        .await?;
        Ok(())
    }

    async fn notify_unindex(&self, e: &Entry) -> Result<(), StoreError> {
        self.exec(
            &self.notify_st.unindex,
            (
                e.shard,
                e.bucket,
                CqlTimestamp(e.due_ms),
                e.order_id.as_str(),
                e.version,
                e.id.as_str(),
            ),
        )
        .await?;
        Ok(())
    }

    /// Due entries of one shard, earliest first, at most `limit`; advances the shard's
    /// watermark past old buckets read empty (the timers' scan, `scan_due`).
    async fn notifications_due_in_shard(
        &self,
        shard: i32,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let st = &self.notify_st;
        self.scan_due(
            &st.marks,
            &st.due_in_bucket,
            shard,
            now_ms,
            limit,
            |bucket, row| {
                let (due, order_id, version, id, merchant, written_us): (
                    CqlTimestamp,
                    String,
                    i64,
                    String,
                    Option<String>,
                    Option<i64>,
                ) = row;
                Some(Entry {
                    shard,
                    bucket,
                    due_ms: due.0,
                    order_id,
                    version,
                    id,
                    merchant: merchant.unwrap_or_default(),
                    written_us,
                })
            },
        )
        .await
    }

    /// Where a notification's row is: (order, version, merchant).
    async fn notification_lookup(
        &self,
        id: &NotificationId,
    ) -> Result<Option<(String, i64, String)>, StoreError> {
        let rows = self
            .exec(&self.notify_st.read_lookup, (id.as_str(),))
            .await?
            .into_rows_result()
            .map_err(be)?;
        Ok(rows
            .maybe_first_row::<(Option<String>, Option<i64>, Option<String>)>()
            .map_err(be)?
            .and_then(|(o, v, m)| Some((o?, v?, m.unwrap_or_default()))))
    }

    async fn notification_row(
        &self,
        serial: bool,
        order_id: &str,
        version: i64,
        id: &str,
    ) -> Result<Option<Notification>, StoreError> {
        let st = if serial {
            &self.notify_st.read_row_serial
        } else {
            &self.notify_st.read_row
        };
        let rows = self
            .exec(st, (order_id, version, id))
            .await?
            .into_rows_result()
            .map_err(be)?;
        rows.maybe_first_row::<RowTuple>()
            .map_err(be)?
            .map(decode)
            .transpose()
    }

    /// An order's notifications, by version (at most `MAX_PER_ORDER`).
    async fn order_notifications(&self, order_id: &str) -> Result<Vec<Notification>, StoreError> {
        let rows = self
            .exec(&self.notify_st.order_rows, (order_id, MAX_PER_ORDER))
            .await?
            .into_rows_result()
            .map_err(be)?;
        rows.rows::<RowTuple>()
            .map_err(be)?
            .map(|r| decode(r.map_err(be)?))
            .collect()
    }

    /// Test hook: the due entry of `n` alone, as an enqueue cut short after it (or one whose
    /// row insert has not answered yet).
    #[cfg(test)]
    pub(super) async fn index_notification_only(&self, n: &Notification) -> Result<(), StoreError> {
        self.notify_index(&Entry::new(n, ms(n.next_attempt_at)))
            .await
    }

    /// Test hook: the rest of that enqueue, `n`'s lookup and row without their due entry.
    #[cfg(test)]
    pub(super) async fn store_notification_row_only(
        &self,
        n: &Notification,
    ) -> Result<(), StoreError> {
        self.insert_notification(n, now_ms()).await
    }

    /// `n`'s lookup row and its row (`IF NOT EXISTS`: one already stored is left as it is).
    async fn insert_notification(&self, n: &Notification, now: i64) -> Result<(), StoreError> {
        let (order, version, id) = (
            n.order_id.as_str(),
            n.version as i64,
            n.notification_id.as_str(),
        );
        self.exec(
            &self.notify_st.insert_lookup,
            (id, order, version, n.merchant_id.as_str()),
        )
        .await?;
        self.exec(
            &self.notify_st.insert_row,
            (
                order,
                version,
                id,
                n.merchant_id.as_str(),
                n.event_id.as_str(),
                n.event_type.as_str(),
                n.url.as_str(),
                n.body.as_slice(),
                CqlTimestamp(ms(n.next_attempt_at)),
                CqlTimestamp(ms(n.created_at)),
                CqlTimestamp(now),
            ),
        )
        .await?;
        Ok(())
    }

    /// Tries to lease the notification `entry` points at; answers it as it was before the
    /// lease when this claim got it.
    async fn claim_entry(
        &self,
        entry: &Entry,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<Notification>, StoreError> {
        let rows = self.order_notifications(&entry.order_id).await?;
        let target = rows
            .iter()
            .find(|n| n.version as i64 == entry.version && n.notification_id.as_str() == entry.id);
        let live = |n: &Notification| {
            let due = ms(n.next_attempt_at);
            n.status == NotificationStatus::Pending && due <= now_ms && due <= entry.due_ms
        };
        let Some(n) = target.filter(|n| live(n)) else {
            // Not due by its row. A young entry may be ahead of its row: an enqueue, a retry or
            // a redelivery writes the entry, then the row, and its row write may not have
            // answered yet (the row not there, or still leased). Left for a later claim.
            if self.may_be_in_flight(entry.written_us) {
                return Ok(None);
            }
            // Stale (no row: an enqueue cut short, redone later with its own entry; or the row
            // moved on, with an entry of its own). Deleting the only entry of a live row would
            // lose it, so a plain read that may lag is confirmed at SERIAL first (stale
            // entries are rare: claims and outcomes delete the entries they make stale).
            let now = self
                .notification_row(true, &entry.order_id, entry.version, &entry.id)
                .await?;
            if !now.as_ref().is_some_and(live) {
                self.notify_unindex(entry).await?;
            }
            return Ok(None);
        };
        let due = ms(n.next_attempt_at);
        let blocker = rows
            .iter()
            .filter(|e| e.version < n.version && e.status == NotificationStatus::Pending)
            .min_by_key(|e| ms(e.next_attempt_at));
        if let Some(blocker) = blocker {
            // Waits for the earlier version: looked at again when that one is next due (or at
            // once when it ends, see `record_delivery`).
            let to = ms(blocker.next_attempt_at).max(entry.due_ms);
            if to != entry.due_ms {
                self.notify_index(&entry.moved(to)).await?;
                self.notify_unindex(entry).await?;
                // Had the blocker ended since the read above, its outcome may have indexed this
                // row at `entry`'s key, just deleted: then it is put back, due as it was. An
                // outcome written after this SERIAL read indexes it after the delete.
                let still = self
                    .notification_row(
                        true,
                        &entry.order_id,
                        blocker.version as i64,
                        blocker.notification_id.as_str(),
                    )
                    .await?;
                if !still.is_some_and(|b| b.status == NotificationStatus::Pending) {
                    self.notify_index(&entry.moved(entry.due_ms)).await?;
                }
            }
            return Ok(None);
        }
        let leased = entry.moved(lease_ms);
        if lease_ms != entry.due_ms {
            self.notify_index(&leased).await?;
        }
        let got = super::orders::applied(
            self.exec(
                &self.notify_st.lease,
                (
                    CqlTimestamp(lease_ms),
                    entry.order_id.as_str(),
                    entry.version,
                    entry.id.as_str(),
                    int(n.attempts),
                    CqlTimestamp(due),
                ),
            )
            .await?,
        )?;
        if lease_ms != entry.due_ms {
            self.notify_unindex(entry).await?;
        }
        Ok(got.then(|| n.clone()))
    }
}

#[async_trait]
impl NotificationStore for ScyllaStore {
    async fn enqueue_notifications(
        &self,
        rows: Vec<Notification>,
        cursor_name: &str,
        partition: u32,
        seq: u64,
    ) -> Result<(), StoreError> {
        super::log::check_partition(partition)?;
        let now = now_ms();
        for n in &rows {
            self.notify_index(&Entry::new(n, ms(n.next_attempt_at)))
                .await?;
            self.insert_notification(n, now).await?;
        }
        self.set_cursor(cursor_name, partition, seq).await
    }

    async fn claim_due_notifications(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
        room: &MerchantRoom,
    ) -> Result<Vec<Notification>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (now_ms, lease_ms) = (ms(now), ms(lease_until));
        let mut left: HashMap<String, usize> = room
            .in_flight
            .iter()
            .map(|(m, n)| (m.to_string(), room.per_merchant.saturating_sub(*n)))
            .collect();
        let scan = limit.saturating_mul(CLAIM_SCAN_FACTOR);
        let mut due = Vec::new();
        for shard in 0..super::timers::SHARDS as i32 {
            due.extend(self.notifications_due_in_shard(shard, now_ms, scan).await?);
        }
        due.sort_by(|a, b| {
            (a.due_ms, &a.order_id, a.version, &a.id).cmp(&(
                b.due_ms,
                &b.order_id,
                b.version,
                &b.id,
            ))
        });
        let mut taken: Vec<Notification> = Vec::new();
        for entry in due {
            if taken.len() >= limit {
                break;
            }
            if taken.iter().any(|n| n.notification_id.as_str() == entry.id) {
                // A second entry of one just taken: stale now.
                continue;
            }
            let room_left = left
                .entry(entry.merchant.clone())
                .or_insert(room.per_merchant);
            if *room_left == 0 {
                continue;
            }
            if let Some(n) = self.claim_entry(&entry, now_ms, lease_ms).await? {
                // The row's merchant rules (the entry's is a copy).
                let row_left = left
                    .entry(n.merchant_id.to_string())
                    .or_insert(room.per_merchant);
                *row_left = row_left.saturating_sub(1);
                taken.push(n);
            }
        }
        Ok(taken)
    }

    async fn record_delivery(
        &self,
        id: &NotificationId,
        claimed_attempts: u32,
        outcome: DeliveryOutcome,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let Some((order, version, _)) = self.notification_lookup(id).await? else {
            return Ok(());
        };
        let claimed_now = |n: &Notification| {
            n.status == NotificationStatus::Pending && n.attempts == claimed_attempts
        };
        let mut current = self
            .notification_row(false, &order, version, id.as_str())
            .await?;
        if !current.as_ref().is_some_and(claimed_now) {
            // Confirmed at SERIAL (a plain read may lag): an outcome is not dropped on a stale read.
            current = self
                .notification_row(true, &order, version, id.as_str())
                .await?;
        }
        let Some(current) = current.filter(claimed_now) else {
            // Changed since it was claimed: left alone.
            return Ok(());
        };
        let attempts = int(claimed_attempts.saturating_add(1));
        let (claimed, now_ms) = (int(claimed_attempts), ms(now));
        let keys = (order.as_str(), version, id.as_str());
        let (applied, new_due) = match outcome {
            DeliveryOutcome::Retry {
                status,
                error,
                next_attempt_at,
                schedule_pos,
            } => {
                let next = ms(next_attempt_at);
                self.notify_index(&Entry::new(&current, next)).await?;
                let r = self
                    .exec(
                        &self.notify_st.record_retry,
                        (
                            attempts,
                            CqlTimestamp(next),
                            int(schedule_pos),
                            status.map(i32::from),
                            error,
                            CqlTimestamp(now_ms),
                            keys.0,
                            keys.1,
                            keys.2,
                            claimed,
                        ),
                    )
                    .await?;
                (super::orders::applied(r)?, Some(next))
            }
            DeliveryOutcome::Delivered { .. } | DeliveryOutcome::Dead { .. } => {
                let (name, status, error) = match outcome {
                    DeliveryOutcome::Delivered { status } => ("DELIVERED", Some(status), None),
                    DeliveryOutcome::Dead { status, error } => ("DEAD", status, Some(error)),
                    DeliveryOutcome::Retry { .. } => unreachable!("matched above"),
                };
                let r = self
                    .exec(
                        &self.notify_st.record_final,
                        (
                            name,
                            attempts,
                            status.map(i32::from),
                            error,
                            CqlTimestamp(now_ms),
                            keys.0,
                            keys.1,
                            keys.2,
                            claimed,
                        ),
                    )
                    .await?;
                let ended = super::orders::applied(r)?;
                if ended {
                    // The order's later PENDING notifications waited for this one: indexed at
                    // their due time, so the next version goes out at once. After the outcome,
                    // not before it: a claim that saw this one PENDING and is moving a later
                    // one's entry away deletes that entry's key and then reads this row at
                    // SERIAL; an index written before the outcome could fall between the two
                    // and be deleted, leaving the later one to wait for this one's lease.
                    // Nothing is lost on a crash between: every PENDING row keeps an entry of
                    // its own (a claim moves one, never drops it, while the row waits).
                    for later in self.order_notifications(&order).await? {
                        if later.version > current.version
                            && later.status == NotificationStatus::Pending
                        {
                            self.notify_index(&Entry::new(&later, ms(later.next_attempt_at)))
                                .await?;
                        }
                    }
                }
                (ended, None)
            }
        };
        let lease_due = ms(current.next_attempt_at);
        if applied && new_due != Some(lease_due) {
            // The claim's entry (at its lease) points at nothing due now: best effort, a claim
            // drops it otherwise.
            let lease = Entry {
                bucket: bucket_of(lease_due),
                ..Entry::new(&current, lease_due)
            };
            self.notify_unindex(&lease).await?;
        }
        Ok(())
    }

    async fn redeliver(
        &self,
        merchant: &MerchantId,
        id: &NotificationId,
        now: OffsetDateTime,
    ) -> Result<Option<Notification>, StoreError> {
        let Some((order, version, owner)) = self.notification_lookup(id).await? else {
            return Ok(None);
        };
        if owner != merchant.as_str() {
            return Ok(None);
        }
        // At SERIAL: a lagging replica's PENDING would answer without redelivering.
        let Some(current) = self
            .notification_row(true, &order, version, id.as_str())
            .await?
        else {
            return Ok(None);
        };
        if current.merchant_id != *merchant {
            return Ok(None);
        }
        if current.status == NotificationStatus::Pending {
            return Ok(Some(current));
        }
        let now_ms = ms(now);
        self.notify_index(&Entry::new(&current, now_ms)).await?;
        let applied = super::orders::applied(
            self.exec(
                &self.notify_st.redeliver,
                (
                    CqlTimestamp(now_ms),
                    CqlTimestamp(now_ms),
                    order.as_str(),
                    version,
                    id.as_str(),
                ),
            )
            .await?,
        )?;
        if applied {
            return Ok(Some(Notification {
                status: NotificationStatus::Pending,
                next_attempt_at: from_ms(now_ms),
                schedule_pos: 0,
                ..current
            }));
        }
        // Made PENDING meanwhile: answered as it is now.
        self.notification_row(true, &order, version, id.as_str())
            .await
    }

    async fn notifications_for_order(
        &self,
        merchant: &MerchantId,
        order_id: &OrderId,
    ) -> Result<Vec<Notification>, StoreError> {
        let mut rows = self.order_notifications(order_id.as_str()).await?;
        rows.retain(|n| n.merchant_id == *merchant);
        Ok(rows)
    }

    async fn pending_notifications(&self) -> Result<i64, StoreError> {
        let mut total = 0;
        for shard in 0..super::timers::SHARDS as i32 {
            let from = self.watermark(&self.notify_st.marks, shard).await?;
            total += self
                .count_in_buckets(
                    &self.notify_st.count_in_buckets,
                    from,
                    from + COUNT_BUCKETS,
                    |buckets| (shard, buckets),
                )
                .await?;
        }
        Ok(total)
    }
}
