//! The embedded SQLite backend: WAL mode, one writer thread that group-commits (see `writer`),
//! and a small pool of read-only connections. Durability: with `synchronous = "full"` a write is
//! answered only after its transaction's WAL frames are fsynced, so it survives kill -9 and
//! power loss; `"normal"` survives kill -9 but not power loss.

mod commands;
mod events;
mod ledger;
mod ledger_scan;
mod notifications;
mod schema;
mod writer;

use crate::config::SqliteSettings;
use crate::domain::{
    Event, MerchantId, MerchantOrderNo, Order, OrderId, OrderStatus, SubmitToken, Timer, TimerKind,
    TimerOp,
};
use crate::metrics::Metrics;
use crate::storage::{
    CreateOutcome, EventLog, OrderRecords, OrderStore, Position, StoreError, StoredEvent,
    TimerStore, TokenRecord,
};
use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use writer::{
    Admission, BatchLimits, EventRow, OrderRow, TimerRow, WriteOk, WriteOp, WriteRequest,
};

/// Events kept decoded: the writer puts every event it commits, and the log's consumers (relay,
/// ledger, notifier), which each read every event mostly right after its commit, decode only
/// the ones that fell out.
const DECODED_EVENTS: usize = 16_384;
/// Size the WAL file is truncated to after a checkpoint resets it.
const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// Most rows of each kind one purge call deletes, so a purge holds the writer only briefly;
/// the purge loop calls again while there is more.
const PURGE_LIMIT: usize = 2_000;

pub(crate) fn now_ms() -> i64 {
    to_ms(OffsetDateTime::now_utc())
}

pub(crate) fn to_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The SQLite store.
pub struct SqliteStore {
    tx: RwLock<Option<mpsc::Sender<WriteRequest>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    reader_permits: Semaphore,
    enqueue_timeout: Duration,
    /// Counts commits that stored events, for the outbox's other consumers.
    events_seen: watch::Sender<u64>,
    /// Whether the last group commit succeeded (a full disk makes it false).
    write_healthy: Arc<AtomicBool>,
    /// Events decoded lately, shared by the consumers that read them.
    decoded: Arc<events::Decoded>,
    /// `paycore serve`'s lock on the database (see `take_ownership`), until `close`.
    owner_lock: Mutex<Option<std::fs::File>>,
    /// Read failures are counted in `paycore_storage_errors_total{op="read"}`.
    metrics: Arc<Metrics>,
    /// The submit-token key (`store_keys`).
    token_key: crate::domain::TokenKey,
}

/// The submit-token key kept in `store_keys`, made now if the store has none.
fn submit_token_key(conn: &Connection) -> rusqlite::Result<crate::domain::TokenKey> {
    let fresh = crate::domain::TokenKey::generate();
    conn.execute(
        "INSERT OR IGNORE INTO store_keys (name, value) VALUES ('submit_token', ?1)",
        [&fresh.bytes()[..]],
    )?;
    let stored: Vec<u8> = conn.query_row(
        "SELECT value FROM store_keys WHERE name = 'submit_token'",
        [],
        |r| r.get(0),
    )?;
    crate::domain::TokenKey::from_bytes(&stored).ok_or_else(|| {
        rusqlite::Error::InvalidColumnType(
            0,
            "store_keys.value".into(),
            rusqlite::types::Type::Blob,
        )
    })
}

fn open_conn(path: &Path, flags: OpenFlags, busy_ms: u64) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_millis(busy_ms))?;
    // The query planner's stability guarantee: a cached statement keeps its plan whatever is
    // bound to it. Without it SQLite prepares a statement again whenever a new value is bound
    // to its `LIMIT ?` (it plans with the bound value), and the consumers' reads and the
    // claims run with changing limits all the time.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database, migrates it, and starts the writer thread.
    /// Must be called inside a tokio runtime.
    pub fn open(settings: &SqliteSettings, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        let be = |e: rusqlite::Error| StoreError::Backend(e.to_string());
        let path = Path::new(&settings.path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("create {}: {e}", dir.display())))?;
        }
        let mut conn =
            open_conn(path, OpenFlags::default(), settings.busy_timeout_ms).map_err(be)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(be)?;
        conn.pragma_update(None, "synchronous", settings.synchronous.pragma())
            .map_err(be)?;
        // A batch applied again with a savepoint per write (see `writer::commit_batch`) keeps
        // their statement journal in memory, not in a temporary file written page by page.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(be)?;
        // The writer's page cache (negative: KiB), so that hot index pages are not read again.
        conn.pragma_update(None, "cache_size", -(settings.writer_cache_kib as i64))
            .map_err(be)?;
        schema::migrate(&mut conn).map_err(be)?;
        let token_key = submit_token_key(&conn).map_err(be)?;
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            settings.wal_autocheckpoint_pages,
        )
        .map_err(be)?;
        // Bounds the WAL file left behind after a checkpoint resets it.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)
            .map_err(be)?;

        let mut readers = Vec::with_capacity(settings.readers);
        for _ in 0..settings.readers {
            let r = open_conn(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                settings.busy_timeout_ms,
            )
            .map_err(be)?;
            readers.push(r);
        }

        let (tx, rx) = mpsc::channel(settings.queue_capacity);
        let limits = BatchLimits {
            max_writes: settings.batch_max_writes,
            max_wait: Duration::from_micros(settings.batch_max_wait_us),
            min_interval: Duration::from_micros(settings.commit_interval_us),
        };
        let runtime = tokio::runtime::Handle::current();
        let (events_seen, _) = watch::channel(0u64);
        let seen = events_seen.clone();
        let write_healthy = Arc::new(AtomicBool::new(true));
        let healthy = write_healthy.clone();
        let decoded = Arc::new(events::Decoded::new(DECODED_EVENTS));
        let shared = decoded.clone();
        let own_metrics = metrics.clone();
        let handle = std::thread::Builder::new()
            .name("paycore-sqlite-writer".into())
            .spawn(move || {
                let wakeups = writer::EventWakeups {
                    consumers: seen,
                    decoded: shared,
                };
                writer::run(conn, rx, limits, runtime, wakeups, metrics, healthy)
            })
            .map_err(|e| StoreError::Backend(format!("spawn writer: {e}")))?;
        Ok(Self {
            tx: RwLock::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            reader_permits: Semaphore::new(readers.len()),
            readers: Mutex::new(readers),
            enqueue_timeout: Duration::from_millis(settings.enqueue_timeout_ms),
            events_seen,
            write_healthy,
            decoded,
            owner_lock: Mutex::new(None),
            metrics: own_metrics,
            token_key,
        })
    }

    /// One `paycore serve` per database: an exclusive lock on `<path>-serve.lock`, taken before
    /// the database is opened and held (`hold`) until `close` (the kernel drops it when the process dies, so a restart after a kill takes it
    /// at once). A second serve on the database is refused, naming the lock. The commands that
    /// run beside serve (`ledger verify`, `log`) do not take it.
    pub fn lock_for_serve(path: &str) -> Result<std::fs::File, StoreError> {
        let lock_path = format!("{path}-serve.lock");
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("create {}: {e}", dir.display())))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Backend(format!("open {lock_path}: {e}")))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Backend(format!(
                    "another paycore serve uses the database {path} (it holds {lock_path}): \
                     one serve per database"
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Backend(format!("lock {lock_path}: {e}")));
            }
        }
        Ok(file)
    }

    /// Keeps serve's lock (`lock_for_serve`) until `close`.
    pub fn hold(&self, lock: std::fs::File) {
        if let Ok(mut held) = self.owner_lock.lock() {
            *held = Some(lock);
        }
    }

    /// Changes after every commit that stored events: each consumer of the outbox waits on its
    /// own receiver, so no commit is missed whoever else is woken.
    pub fn watch_events_committed(&self) -> watch::Receiver<u64> {
        self.events_seen.subscribe()
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOk, StoreError> {
        let sender = self
            .tx
            .read()
            .map_err(|_| StoreError::Closed)?
            .clone()
            .ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        let op_name = op.kind();
        let started = std::time::Instant::now();
        sender
            .send_timeout(WriteRequest { op, reply }, self.enqueue_timeout)
            .await
            .map_err(|e| match e {
                mpsc::error::SendTimeoutError::Timeout(_) => StoreError::Overloaded,
                mpsc::error::SendTimeoutError::Closed(_) => StoreError::Closed,
            })?;
        // The writer answers every request it takes; a dropped reply means it died.
        let answered = answer
            .await
            .map_err(|_| StoreError::Backend("the writer stopped".into()))?;
        self.metrics
            .storage_write_seconds
            .with_label_values(&[op_name])
            .observe(started.elapsed().as_secs_f64());
        answered
    }

    /// Runs `f` on a pooled read-only connection, off the async threads.
    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let _permit = self
            .reader_permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let conn = self
            .readers
            .lock()
            .map_err(|_| StoreError::Backend("reader pool poisoned".into()))?
            .pop()
            .ok_or_else(|| StoreError::Backend("reader pool empty".into()))?;
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = f(&conn);
            (conn, r)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?;
        if let Ok(mut pool) = self.readers.lock() {
            pool.push(conn);
        }
        if let Err(StoreError::Backend(_) | StoreError::Corrupt(_)) = &result {
            self.metrics
                .ops
                .storage_errors
                .with_label_values(&["read"])
                .inc();
        }
        result
    }
}

impl SqliteStore {
    async fn create(
        &self,
        admission: Admission,
        order: Order,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
        now: OffsetDateTime,
    ) -> Result<CreateOutcome, StoreError> {
        let (order, events) = (OrderRow::encode(&order)?, EventRow::encode_all(events));
        let timers = TimerRow::encode_all(&timers);
        match self
            .write(WriteOp::CreateOrder {
                admission,
                order,
                events,
                timers,
                now,
            })
            .await?
        {
            WriteOk::Create(outcome) => Ok(outcome),
            other => Err(StoreError::Backend(format!(
                "unexpected writer answer {other:?}"
            ))),
        }
    }

    /// An order update, with a command's reply in the same transaction when one is given.
    async fn update(
        &self,
        reply: Option<commands::ReplyRow>,
        order: Order,
        expected_version: u64,
        previous_status: OrderStatus,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
    ) -> Result<(), StoreError> {
        let (order, events) = (OrderRow::encode(&order)?, EventRow::encode_all(events));
        let timers = TimerRow::encode_all(&timers);
        self.write(WriteOp::UpdateOrder {
            order,
            expected_version,
            previous_status,
            events,
            timers,
            reply,
        })
        .await
        .map(|_| ())
    }
}

fn be(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn decode_order(body: &str) -> Result<Order, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("order body: {e}")))
}

#[async_trait]
impl OrderRecords for SqliteStore {
    fn submit_token_key(&self) -> crate::domain::TokenKey {
        self.token_key.clone()
    }

    async fn issue_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        self.write(WriteOp::IssueToken(token)).await.map(|_| ())
    }

    async fn create_order(
        &self,
        token: SubmitToken,
        order: Order,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
        now: OffsetDateTime,
    ) -> Result<CreateOutcome, StoreError> {
        self.create(Admission::Token(token), order, events, timers, now)
            .await
    }

    async fn update_order(
        &self,
        order: Order,
        expected_version: u64,
        previous_status: OrderStatus,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
    ) -> Result<(), StoreError> {
        self.update(
            None,
            order,
            expected_version,
            previous_status,
            events,
            timers,
        )
        .await
    }

    async fn load_order(&self, order_id: &OrderId) -> Result<Option<Order>, StoreError> {
        let id = order_id.to_string();
        self.read(move |c| {
            let body: Option<String> = c
                .prepare_cached("SELECT body FROM orders WHERE order_id = ?1")
                .and_then(|mut s| s.query_row([&id], |r| r.get(0)).optional())
                .map_err(be)?;
            body.as_deref().map(decode_order).transpose()
        })
        .await
    }

    async fn find_by_merchant_order_no(
        &self,
        merchant_id: &MerchantId,
        merchant_order_no: &MerchantOrderNo,
    ) -> Result<Option<Order>, StoreError> {
        let (m, n) = (merchant_id.to_string(), merchant_order_no.to_string());
        self.read(move |c| {
            let body: Option<String> = c
                .prepare_cached(
                    "SELECT body FROM orders WHERE merchant_id = ?1 AND merchant_order_no = ?2",
                )
                .and_then(|mut s| s.query_row([&m, &n], |r| r.get(0)).optional())
                .map_err(be)?;
            body.as_deref().map(decode_order).transpose()
        })
        .await
    }

    async fn order_events(&self, order_id: &OrderId) -> Result<Vec<Event>, StoreError> {
        let id = order_id.as_str().to_string();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT body FROM events WHERE order_id = ?1 ORDER BY version, seq")
                .map_err(be)?;
            let bodies = stmt
                .query_map([id], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(be)?;
            bodies
                .iter()
                .map(|b| {
                    // Every outbox row so far is schema version 1 (see `streams::codec`).
                    crate::streams::codec::decode(1, b.as_bytes())
                        .map_err(|e| StoreError::Corrupt(format!("event body: {e}")))
                })
                .collect()
        })
        .await
    }
}

#[async_trait]
impl TimerStore for SqliteStore {
    async fn write_timers(&self, order_id: &OrderId, ops: Vec<TimerOp>) -> Result<(), StoreError> {
        self.write(WriteOp::Timers {
            order_id: order_id.to_string(),
            timers: TimerRow::encode_all(&ops),
        })
        .await
        .map(|_| ())
    }

    async fn reschedule_timer(
        &self,
        order_id: &OrderId,
        kind: TimerKind,
        fired_attempt: u32,
        next: Option<TimerOp>,
    ) -> Result<(), StoreError> {
        let next = next.and_then(|op| TimerRow::encode_all(&[op]).pop());
        self.write(WriteOp::Reschedule {
            order_id: order_id.to_string(),
            kind: kind.as_str(),
            fired_attempt: i64::from(fired_attempt),
            next,
        })
        .await
        .map(|_| ())
    }

    async fn claim_due_timers(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Timer>, StoreError> {
        match self
            .write(WriteOp::ClaimTimers {
                now_ms: to_ms(now),
                lease_until_ms: to_ms(lease_until),
                limit,
            })
            .await?
        {
            WriteOk::Claimed(timers) => Ok(timers),
            other => Err(StoreError::Backend(format!(
                "unexpected writer answer {other:?}"
            ))),
        }
    }

    async fn timer_counts(
        &self,
        overdue_before: OffsetDateTime,
        pending_before: OffsetDateTime,
    ) -> Result<(i64, i64), StoreError> {
        let (before, horizon) = (to_ms(overdue_before), to_ms(pending_before));
        self.read(move |c| {
            let pending: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM timers WHERE due_at_ms < ?1")
                .and_then(|mut s| s.query_row([horizon], |r| r.get(0)))
                .map_err(be)?;
            let overdue: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM timers WHERE due_at_ms < ?1")
                .and_then(|mut s| s.query_row([before], |r| r.get(0)))
                .map_err(be)?;
            Ok((pending, overdue))
        })
        .await
    }

    async fn orders_without_timers(
        &self,
        after: Option<OrderId>,
        limit: usize,
    ) -> Result<(Vec<OrderId>, Option<OrderId>), StoreError> {
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT o.order_id,
                            EXISTS (SELECT 1 FROM timers t WHERE t.order_id = o.order_id)
                     FROM orders o INDEXED BY orders_open_work
                     WHERE o.open_work = 1 AND o.order_id > ?1
                     ORDER BY o.order_id LIMIT ?2",
                )
                .map_err(be)?;
            let rows = stmt
                .query_map(params![after, limit as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?))
                })
                .map_err(be)?;
            let (mut found, mut last, mut scanned) = (Vec::new(), None, 0usize);
            for row in rows {
                let (id, has_timer) = row.map_err(be)?;
                let id = OrderId::parse(&id)
                    .map_err(|_| StoreError::Corrupt(format!("order id {id}")))?;
                scanned += 1;
                if !has_timer {
                    found.push(id.clone());
                }
                last = Some(id);
            }
            Ok((found, if scanned < limit { None } else { last }))
        })
        .await
    }
}

/// The outbox is the log's one partition, 0.
fn one_partition(partition: u32) -> Result<(), StoreError> {
    if partition == 0 {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "the embedded log has one partition (0), not {partition}"
        )))
    }
}

#[async_trait]
impl EventLog for SqliteStore {
    fn log_partitions(&self) -> u32 {
        1
    }

    fn watch_commits(&self) -> watch::Receiver<u64> {
        self.watch_events_committed()
    }

    async fn events_after(
        &self,
        partition: u32,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        one_partition(partition)?;
        let rows = self
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                    )
                    .map_err(be)?;
                let rows = stmt
                    .query_map([seq as i64, limit as i64], |r| {
                        Ok((
                            r.get::<_, i64>(0)? as u64,
                            r.get::<_, String>(1)?.into_bytes(),
                        ))
                    })
                    .map_err(be)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(be)
            })
            .await?;
        self.decoded.resolve(rows)
    }

    async fn cursor(&self, name: &str, partition: u32) -> Result<u64, StoreError> {
        one_partition(partition)?;
        let name = name.to_string();
        self.read(move |c| {
            let seq: Option<i64> = c
                .query_row(
                    "SELECT seq FROM stream_cursors WHERE name = ?1",
                    [&name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(be)?;
            Ok(seq.unwrap_or(0) as u64)
        })
        .await
    }

    async fn set_cursor(&self, name: &str, partition: u32, seq: u64) -> Result<(), StoreError> {
        one_partition(partition)?;
        self.write(WriteOp::SetCursor {
            name: name.to_string(),
            seq,
        })
        .await
        .map(|_| ())
    }

    async fn register_cursor(&self, name: &str) -> Result<Vec<u64>, StoreError> {
        let name = name.to_string();
        match self.write(WriteOp::RegisterCursor { name }).await? {
            WriteOk::Cursor(seq) => Ok(vec![seq]),
            other => Err(StoreError::Backend(format!(
                "unexpected writer answer {other:?}"
            ))),
        }
    }

    async fn drop_cursor(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_string();
        self.write(WriteOp::DropCursor { name }).await.map(|_| ())
    }

    async fn cursors(&self) -> Result<(Vec<(String, Position)>, Vec<u64>), StoreError> {
        self.read(|c| {
            let tx = c.unchecked_transaction().map_err(be)?;
            let head: i64 = tx
                .query_row(
                    "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
                                COALESCE((SELECT MAX(seq) FROM events), 0))",
                    [],
                    |r| r.get(0),
                )
                .map_err(be)?;
            let mut stmt = tx
                .prepare_cached("SELECT name, seq FROM stream_cursors ORDER BY name")
                .map_err(be)?;
            let rows = stmt
                .query_map([], |r| {
                    let seq = r.get::<_, i64>(1)? as u64;
                    Ok((r.get::<_, String>(0)?, Position { partition: 0, seq }))
                })
                .map_err(be)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(be)?;
            Ok((rows, vec![head as u64]))
        })
        .await
    }
}

#[async_trait]
impl OrderStore for SqliteStore {
    async fn status_counts(&self) -> Result<Vec<(OrderStatus, i64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached("SELECT status, n FROM order_status_counts")
                .map_err(be)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(be)?;
            let mut out = Vec::new();
            for row in rows {
                let (s, n) = row.map_err(be)?;
                let status = OrderStatus::parse(&s)
                    .ok_or_else(|| StoreError::Corrupt(format!("status {s}")))?;
                out.push((status, n));
            }
            Ok(out)
        })
        .await
    }

    async fn purge(
        &self,
        now: OffsetDateTime,
        events_before: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        match self
            .write(WriteOp::Purge {
                now,
                events_before,
                limit: PURGE_LIMIT,
            })
            .await?
        {
            WriteOk::Purged(n) => Ok(n),
            other => Err(StoreError::Backend(format!(
                "unexpected writer answer {other:?}"
            ))),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.tx.read().map(|t| t.is_none()).unwrap_or(true) {
            return Err(StoreError::Closed);
        }
        if !self.write_healthy.load(Ordering::Acquire) {
            // The last commit failed (a full disk, say): ready again only once a write commits.
            self.write(WriteOp::Probe).await?;
        }
        self.read(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map(|_| ())
                .map_err(be)
        })
        .await
    }

    async fn close(&self) {
        // Dropping the last sender lets the writer drain what is queued, commit, and exit.
        if let Ok(mut tx) = self.tx.write() {
            tx.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        // Everything is committed: the next serve may open the database.
        if let Ok(mut held) = self.owner_lock.lock() {
            held.take();
        }
    }
}

#[cfg(test)]
impl SqliteStore {
    /// Caps the database at its current size (`grow = false`) or lifts the cap: a full disk.
    pub(crate) async fn simulate_full_disk(&self, full: bool) {
        let pages = if full {
            self.read(|c| {
                c.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
                    .map_err(be)
            })
            .await
            .unwrap_or(1)
        } else {
            i64::from(u32::MAX >> 1)
        };
        let _ = self.write(WriteOp::LimitPages(pages)).await;
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
