//! The single SQLite writer: one OS thread that owns the only write connection and group-commits
//! many actors' writes in one transaction. A write that is refused (a used token, a duplicate
//! order, a version conflict) changes nothing while the rest of the batch commits (see
//! `commit_batch`). A write is answered only after its transaction commits.

use super::events::Decoded;
use super::{now_ms, to_ms};
use crate::domain::{Event, Order, OrderId, OrderStatus, SubmitToken, Timer, TimerKind, TimerOp};
use crate::metrics::Metrics;
use crate::storage::{CreateOutcome, StoreError, StoredEvent, TokenRecord};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch};

/// An order encoded for storage. Encoding happens on the caller's thread, so the single writer
/// thread spends its time in SQLite only.
#[derive(Debug)]
pub(crate) struct OrderRow {
    pub order_id: String,
    pub merchant_id: String,
    pub merchant_order_no: String,
    pub status: OrderStatus,
    pub version: i64,
    pub body: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The order has something left to finish (the stuck-order sweep scans these).
    pub open_work: bool,
}

impl OrderRow {
    pub fn encode(order: &Order) -> Result<Self, StoreError> {
        Ok(Self {
            order_id: order.order_id.to_string(),
            merchant_id: order.merchant_id.to_string(),
            merchant_order_no: order.merchant_order_no.to_string(),
            status: order.status,
            version: order.version as i64,
            body: serde_json::to_string(order).map_err(|e| StoreError::Backend(e.to_string()))?,
            created_at_ms: to_ms(order.created_at),
            updated_at_ms: to_ms(order.updated_at),
            open_work: order.has_open_work(),
        })
    }
}

/// An outbox event encoded for storage, and the event itself: once its transaction commits, the
/// writer hands both to the outbox's consumers (`events::Decoded`), so none decodes it again.
#[derive(Debug)]
pub(crate) struct EventRow {
    pub event_id: String,
    pub order_id: String,
    pub version: i64,
    pub event_type: String,
    pub body: Arc<str>,
    pub event: Arc<Event>,
}

impl EventRow {
    pub fn encode_all(events: Vec<Event>) -> Vec<Self> {
        events
            .into_iter()
            .map(|e| Self {
                event_id: e.event_id.to_string(),
                order_id: e.order_id.clone(),
                version: e.version as i64,
                event_type: e.event_type.clone(),
                body: crate::streams::codec::encode_text(&e).into(),
                event: Arc::new(e),
            })
            .collect()
    }
}

/// A timer change encoded for storage.
#[derive(Debug)]
pub(crate) enum TimerRow {
    Set {
        kind: &'static str,
        due_at_ms: i64,
        attempt: i64,
    },
    Ensure {
        kind: &'static str,
        due_at_ms: i64,
        attempt: i64,
    },
    Clear(&'static str),
}

impl TimerRow {
    pub fn encode_all(ops: &[TimerOp]) -> Vec<Self> {
        ops.iter()
            .map(|op| match op {
                TimerOp::Set {
                    kind,
                    due_at,
                    attempt,
                } => TimerRow::Set {
                    kind: kind.as_str(),
                    due_at_ms: to_ms(*due_at),
                    attempt: i64::from(*attempt),
                },
                TimerOp::Ensure {
                    kind,
                    due_at,
                    attempt,
                } => TimerRow::Ensure {
                    kind: kind.as_str(),
                    due_at_ms: to_ms(*due_at),
                    attempt: i64::from(*attempt),
                },
                TimerOp::Clear(kind) => TimerRow::Clear(kind.as_str()),
            })
            .collect()
    }
}

/// How long past its expiry a submit token's row is kept (see the purge).
pub(crate) const TOKEN_PURGE_GRACE_MS: i64 = 3_600_000;

/// What admits a create: a submit token (HTTP), or a Kafka command's key with the reply stored
/// in the same write.
#[derive(Debug)]
pub(crate) enum Admission {
    Token(SubmitToken),
    Command(super::commands::ReplyRow),
}

/// One write, as the writer applies it.
#[derive(Debug)]
pub(crate) enum WriteOp {
    IssueToken(TokenRecord),
    CreateOrder {
        admission: Admission,
        order: OrderRow,
        events: Vec<EventRow>,
        timers: Vec<TimerRow>,
        now: OffsetDateTime,
    },
    UpdateOrder {
        order: OrderRow,
        expected_version: u64,
        previous_status: OrderStatus,
        events: Vec<EventRow>,
        timers: Vec<TimerRow>,
        /// A Kafka command's answer, stored in the same transaction (first stored wins).
        reply: Option<super::commands::ReplyRow>,
    },
    Timers {
        order_id: String,
        timers: Vec<TimerRow>,
    },
    Reschedule {
        order_id: String,
        kind: &'static str,
        fired_attempt: i64,
        next: Option<TimerRow>,
    },
    ClaimTimers {
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    },
    Probe,
    /// Test hook: caps the database's pages, so writes fail as on a full disk.
    #[cfg(test)]
    LimitPages(i64),
    SetCursor {
        name: String,
        seq: u64,
    },
    Purge {
        now: OffsetDateTime,
        events_before: OffsetDateTime,
        limit: usize,
    },
    RegisterCursor {
        name: String,
    },
    DropCursor {
        name: String,
    },
    Notifications(super::notifications::NotificationOp),
    Commands(super::commands::CommandOp),
    Ledger(super::ledger::LedgerOp),
}

impl WriteOp {
    /// The kind of write, as `paycore_storage_writes_total` labels it.
    pub(super) fn kind(&self) -> &'static str {
        use super::notifications::NotificationOp as N;
        match self {
            Self::IssueToken(_) => "issue_token",
            Self::CreateOrder { .. } => "create_order",
            Self::UpdateOrder { .. } => "update_order",
            Self::Timers { .. } => "timers",
            Self::Reschedule { .. } => "reschedule",
            Self::ClaimTimers { .. } => "claim_timers",
            Self::Probe => "probe",
            #[cfg(test)]
            Self::LimitPages(_) => "limit_pages",
            Self::SetCursor { .. } => "set_cursor",
            Self::Purge { .. } => "purge",
            Self::RegisterCursor { .. } => "register_cursor",
            Self::DropCursor { .. } => "drop_cursor",
            Self::Notifications(N::Enqueue { .. }) => "notifications_enqueue",
            Self::Notifications(N::Claim { .. }) => "notifications_claim",
            Self::Notifications(N::Record { .. }) => "notifications_record",
            Self::Notifications(N::Redeliver { .. }) => "notifications_redeliver",
            Self::Commands(_) => "command_reply",
            Self::Ledger(_) => "ledger_batch",
        }
    }
}

/// What a write answered.
#[derive(Debug)]
pub(crate) enum WriteOk {
    Done,
    Create(CreateOutcome),
    Purged(u64),
    Claimed(Vec<Timer>),
    Cursor(u64),
    Notifications(super::notifications::NotificationOk),
    Reply(Box<crate::storage::CommandReply>),
    Ledger(crate::storage::BatchOutcome),
}

pub(crate) struct WriteRequest {
    pub op: WriteOp,
    pub reply: oneshot::Sender<Result<WriteOk, StoreError>>,
}

/// Batch bounds for the writer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// Most writes in one transaction.
    pub max_writes: usize,
    /// Longest the writer waits for more writes once it has one; zero commits at once with
    /// whatever queued up while the previous commit was running (the usual group commit).
    pub max_wait: Duration,
    /// Shortest time between the starts of two commits; writes that arrive sooner wait and
    /// join the next one.
    pub min_interval: Duration,
}

/// Bytes the readiness probe writes (and deletes again) to see that storage takes writes.
const PROBE_BYTES: i64 = 256 * 1024;

/// A refusal inside a savepoint: roll the savepoint back and answer this.
pub(crate) enum Refused {
    Answer(Result<WriteOk, StoreError>),
}

/// Who is told of a commit that stored events: every consumer of the outbox watches this count
/// with its own receiver, so none misses a commit that woke another; the events themselves go to
/// the consumers' shared cache first, so that none decodes what the writer had.
pub(crate) struct EventWakeups {
    pub consumers: watch::Sender<u64>,
    pub decoded: Arc<Decoded>,
}

/// Runs the writer until every sender is dropped, then returns after the last batch commits.
pub(crate) fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<WriteRequest>,
    limits: BatchLimits,
    runtime: tokio::runtime::Handle,
    events_committed: EventWakeups,
    metrics: Arc<Metrics>,
    healthy: Arc<AtomicBool>,
) {
    let mut batch: Vec<WriteRequest> = Vec::with_capacity(limits.max_writes);
    let mut last_start: Option<Instant> = None;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        drain(&mut rx, &mut batch, limits.max_writes);
        if let Some(due) = last_start.map(|s| s + limits.min_interval) {
            let now = Instant::now();
            if batch.len() < limits.max_writes && due > now {
                std::thread::sleep(due - now);
                drain(&mut rx, &mut batch, limits.max_writes);
            }
        }
        if batch.len() < limits.max_writes && !limits.max_wait.is_zero() {
            let deadline = tokio::time::Instant::now() + limits.max_wait;
            runtime.block_on(async {
                while batch.len() < limits.max_writes {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(r)) => batch.push(r),
                        _ => break,
                    }
                }
            });
        }
        for w in &batch {
            metrics
                .storage_writes
                .with_label_values(&[w.op.kind()])
                .inc();
        }
        let started = Instant::now();
        last_start = Some(started);
        let writes = batch.len();
        let stored = commit_batch(&mut conn, &mut batch, &healthy, &metrics);
        metrics
            .storage_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.storage_batch_writes.observe(writes as f64);
        batch.clear();
        if !stored.is_empty() {
            events_committed.decoded.put(stored);
            events_committed
                .consumers
                .send_modify(|n| *n = n.wrapping_add(1));
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "final WAL checkpoint failed");
    }
}

/// Moves what is queued into the batch, up to `max` writes, without waiting.
fn drain(rx: &mut mpsc::Receiver<WriteRequest>, batch: &mut Vec<WriteRequest>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
}

/// Applies a batch in one transaction and answers every request. Records in `healthy` whether
/// the batch committed, before any answer goes out (a caller told of a failure and asking
/// `ping` at once must see it). Returns the events it committed, with their positions.
///
/// A write is applied first without a savepoint of its own: every business refusal is found
/// before the write changes a row (creates check before they write), so it leaves nothing to
/// undo. A savepoint per write copies every page the write touches into the statement journal,
/// and that was a quarter of the writer thread's time. When a write is refused after it
/// changed rows, or the backend fails one, the batch is rolled back and applied again with a
/// savepoint per write, so that write alone is undone.
fn commit_batch(
    conn: &mut Connection,
    batch: &mut Vec<WriteRequest>,
    healthy: &AtomicBool,
    metrics: &Metrics,
) -> Vec<StoredEvent> {
    let (outcome, mut answers, mut stored) = match apply_batch(conn, batch, Undo::Never) {
        Pass::Done(outcome, answers, stored) => (outcome, answers, stored),
        Pass::Undo => match apply_batch(conn, batch, Undo::Savepoint) {
            Pass::Done(outcome, answers, stored) => (outcome, answers, stored),
            Pass::Undo => unreachable!("a pass with savepoints never asks for one"),
        },
    };
    // A write refused by the backend (a full disk fails the statement that needs a page) counts
    // against readiness as much as a failed commit; business refusals do not.
    let committed = outcome.is_ok()
        && !answers
            .iter()
            .any(|a| matches!(a, Err(StoreError::Backend(_))));
    if let Err(e) = outcome {
        tracing::error!(error = %e, writes = batch.len(), "group commit failed; every write in it is refused");
        let _ = conn.execute_batch("ROLLBACK");
        stored.clear();
        answers = batch
            .iter()
            .map(|_| Err(StoreError::Backend(e.to_string())))
            .collect();
    }
    healthy.store(committed, Ordering::Release);
    let failed = answers
        .iter()
        .filter(|a| matches!(a, Err(StoreError::Backend(_))))
        .count();
    if failed > 0 {
        metrics
            .ops
            .storage_errors
            .with_label_values(&["write"])
            .inc_by(failed as u64);
    }
    for (req, answer) in batch.drain(..).zip(answers) {
        // The caller may have given up (timeout); the write stands either way.
        let _ = req.reply.send(answer);
    }
    stored
}

/// How a pass undoes one refused write.
#[derive(Clone, Copy, PartialEq)]
enum Undo {
    /// No savepoints: a write refused after it changed rows rolls the batch back.
    Never,
    /// A savepoint around every write.
    Savepoint,
}

enum Pass {
    /// The transaction's outcome (commit or the first statement that failed it), an answer per
    /// write, and the events stored.
    Done(
        rusqlite::Result<()>,
        Vec<Result<WriteOk, StoreError>>,
        Vec<StoredEvent>,
    ),
    /// Rolled back: a write must be undone alone, so the batch needs savepoints.
    Undo,
}

fn apply_batch(conn: &mut Connection, batch: &[WriteRequest], undo: Undo) -> Pass {
    let mut answers: Vec<Result<WriteOk, StoreError>> = Vec::with_capacity(batch.len());
    let mut stored = Vec::new();
    let outcome = (|| -> rusqlite::Result<bool> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for req in batch {
            let (changes_before, stored_before) = (conn.total_changes(), stored.len());
            if undo == Undo::Savepoint {
                conn.prepare_cached("SAVEPOINT w")?.execute([])?;
            }
            match apply(conn, &req.op, &mut stored) {
                Ok(ok) => {
                    if undo == Undo::Savepoint {
                        conn.prepare_cached("RELEASE w")?.execute([])?;
                    }
                    answers.push(Ok(ok));
                }
                Err(Refused::Answer(answer)) => match undo {
                    Undo::Savepoint => {
                        conn.execute_batch("ROLLBACK TO w; RELEASE w")?;
                        stored.truncate(stored_before);
                        answers.push(answer);
                    }
                    Undo::Never
                        if conn.total_changes() == changes_before
                            && !matches!(answer, Err(StoreError::Backend(_))) =>
                    {
                        answers.push(answer);
                    }
                    Undo::Never => {
                        conn.execute_batch("ROLLBACK")?;
                        return Ok(false);
                    }
                },
            }
        }
        conn.execute_batch("COMMIT")?;
        Ok(true)
    })();
    match outcome {
        Ok(true) => Pass::Done(Ok(()), answers, stored),
        Ok(false) => Pass::Undo,
        Err(e) => Pass::Done(Err(e), answers, Vec::new()),
    }
}

pub(crate) fn backend(e: rusqlite::Error) -> Refused {
    Refused::Answer(Err(StoreError::Backend(e.to_string())))
}

/// Applies one write. The events it stores are appended to `stored` (with their positions).
fn apply(
    conn: &Connection,
    op: &WriteOp,
    stored: &mut Vec<StoredEvent>,
) -> Result<WriteOk, Refused> {
    match op {
        WriteOp::IssueToken(t) => {
            conn.prepare_cached(
                "INSERT INTO submit_tokens (token, merchant_id, expires_at_ms) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    t.token.as_str(),
                    t.merchant_id.as_str(),
                    to_ms(t.expires_at)
                ])
            })
            .map_err(backend)?;
            Ok(WriteOk::Done)
        }
        WriteOp::CreateOrder {
            admission,
            order,
            events,
            timers,
            now,
        } => {
            // Checks before writes: a refused create changes nothing. The admission is judged
            // before the merchant's number (a retried submit is answered as one).
            if let Some(existing) = existing_order(conn, order)? {
                let refusal = match admission {
                    Admission::Token(token) => token_refusal(conn, token, order, *now)?,
                    Admission::Command(reply) => super::commands::reply_stored(conn, reply)
                        .map_err(backend)?
                        .then_some(CreateOutcome::Answered),
                };
                let outcome = refusal.unwrap_or(CreateOutcome::Duplicate(existing));
                return Err(Refused::Answer(Ok(WriteOk::Create(outcome))));
            }
            match admission {
                Admission::Token(token) => consume_token(conn, token, order, *now)?,
                Admission::Command(reply) => {
                    if !super::commands::insert_reply(conn, reply).map_err(backend)? {
                        return Err(Refused::Answer(Ok(WriteOk::Create(
                            CreateOutcome::Answered,
                        ))));
                    }
                }
            }
            let created = create_order(conn, order, events, stored)?;
            write_timers(conn, &order.order_id, timers)?;
            Ok(created)
        }
        WriteOp::UpdateOrder {
            order,
            expected_version,
            previous_status,
            events,
            timers,
            reply,
        } => {
            let changed = conn
                .prepare_cached(
                    "UPDATE orders SET status = ?1, version = ?2, body = ?3, updated_at_ms = ?4,
                            open_work = ?7
                     WHERE order_id = ?5 AND version = ?6",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        order.status.as_str(),
                        order.version,
                        order.body,
                        order.updated_at_ms,
                        order.order_id,
                        *expected_version as i64,
                        order.open_work
                    ])
                })
                .map_err(backend)?;
            if changed == 0 {
                return Err(Refused::Answer(Err(StoreError::VersionConflict(
                    order.order_id.clone(),
                ))));
            }
            insert_events(conn, events, stored)?;
            write_timers(conn, &order.order_id, timers)?;
            if *previous_status != order.status {
                bump_count(conn, *previous_status, -1)?;
                bump_count(conn, order.status, 1)?;
            }
            if let Some(reply) = reply {
                super::commands::insert_reply(conn, reply).map_err(backend)?;
            }
            Ok(WriteOk::Done)
        }
        WriteOp::Timers { order_id, timers } => {
            write_timers(conn, order_id, timers)?;
            Ok(WriteOk::Done)
        }
        WriteOp::Reschedule {
            order_id,
            kind,
            fired_attempt,
            next,
        } => {
            let still_fired: Option<i64> = conn
                .prepare_cached("SELECT attempt FROM timers WHERE order_id = ?1 AND kind = ?2")
                .and_then(|mut s| {
                    s.query_row(params![order_id, kind], |r| r.get(0))
                        .optional()
                })
                .map_err(backend)?;
            if still_fired == Some(*fired_attempt) {
                match next {
                    Some(next) => write_timers(conn, order_id, std::slice::from_ref(next))?,
                    None => write_timers(conn, order_id, &[TimerRow::Clear(kind)])?,
                }
            }
            Ok(WriteOk::Done)
        }
        WriteOp::ClaimTimers {
            now_ms,
            lease_until_ms,
            limit,
        } => claim_timers(conn, *now_ms, *lease_until_ms, *limit),
        #[cfg(test)]
        WriteOp::LimitPages(pages) => {
            conn.pragma_update(None, "max_page_count", pages)
                .map_err(backend)?;
            Ok(WriteOk::Done)
        }
        WriteOp::Probe => {
            // Needs room for a few dozen fresh pages (a full disk fails it), then gives them back.
            conn.prepare_cached(
                "INSERT OR REPLACE INTO health_probe (id, at_ms) VALUES (1, zeroblob(?1))",
            )
            .and_then(|mut s| s.execute([PROBE_BYTES]))
            .and_then(|_| conn.execute("DELETE FROM health_probe", []))
            .map_err(backend)?;
            Ok(WriteOk::Done)
        }
        WriteOp::SetCursor { name, seq } => {
            set_cursor(conn, name, *seq)?;
            Ok(WriteOk::Done)
        }
        WriteOp::RegisterCursor { name } => {
            // The end of the outbox is the largest seq ever handed out, purged or not.
            conn.prepare_cached(
                "INSERT OR IGNORE INTO stream_cursors (name, seq)
                 SELECT ?1, MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
                                COALESCE((SELECT MAX(seq) FROM events), 0))",
            )
            .and_then(|mut s| s.execute([name]))
            .map_err(backend)?;
            let seq: i64 = conn
                .prepare_cached("SELECT seq FROM stream_cursors WHERE name = ?1")
                .and_then(|mut s| s.query_row([name], |r| r.get(0)))
                .map_err(backend)?;
            Ok(WriteOk::Cursor(seq as u64))
        }
        WriteOp::DropCursor { name } => {
            conn.prepare_cached("DELETE FROM stream_cursors WHERE name = ?1")
                .and_then(|mut s| s.execute([name]))
                .map_err(backend)?;
            Ok(WriteOk::Done)
        }
        WriteOp::Purge {
            now,
            events_before,
            limit,
        } => {
            // A used signed token is refused by its row until the row goes, and by its expiry
            // after: the row stays an hour past the expiry, so that a clock stepped back by
            // less than that cannot make the token good again.
            let tokens = conn
                .execute(
                    "DELETE FROM submit_tokens WHERE token IN
                       (SELECT token FROM submit_tokens WHERE expires_at_ms < ?1 LIMIT ?2)",
                    params![to_ms(*now) - TOKEN_PURGE_GRACE_MS, *limit as i64],
                )
                .map_err(backend)?;
            // Only events every cursor has passed may go: the outbox is the stream's source. The
            // inner query reads at most `limit` of the oldest rows by key, so a purge costs
            // O(limit) whatever the size of the outbox, and never scans it.
            let events = conn
                .execute(
                    "DELETE FROM events WHERE seq IN
                       (SELECT seq FROM events
                        WHERE seq <= (SELECT COALESCE(MIN(seq), 0) FROM stream_cursors)
                        ORDER BY seq LIMIT ?2)
                     AND created_at_ms < ?1",
                    params![to_ms(*events_before), *limit as i64],
                )
                .map_err(backend)?;
            let replies = super::commands::purge_replies(conn, to_ms(*events_before), *limit)
                .map_err(backend)?;
            Ok(WriteOk::Purged((tokens + events + replies) as u64))
        }
        WriteOp::Notifications(op) => super::notifications::apply(conn, op),
        WriteOp::Commands(op) => super::commands::apply(conn, op),
        WriteOp::Ledger(op) => super::ledger::apply(conn, op),
    }
}

/// Moves the cursor `name` forward to `seq` (never back).
pub(crate) fn set_cursor(conn: &Connection, name: &str, seq: u64) -> Result<(), Refused> {
    conn.prepare_cached(
        "INSERT INTO stream_cursors (name, seq) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET seq = excluded.seq WHERE excluded.seq > stream_cursors.seq",
    )
    .and_then(|mut s| s.execute(params![name, seq as i64]))
    .map_err(backend)?;
    Ok(())
}

/// Consumes a submit token for `order`, or refuses the create (used, unknown, expired) and
/// changes nothing.
fn consume_token(
    conn: &Connection,
    token: &SubmitToken,
    order: &OrderRow,
    now: OffsetDateTime,
) -> Result<(), Refused> {
    let now_ms = to_ms(now);
    if let Some(expires_at) = crate::domain::submit_token::signed_expiry(token) {
        // A signed token (checked by the caller) is stored at its first use, then consumed as
        // a stored one is: a second use finds it used. Refused before it changes a row.
        if expires_at <= now {
            return Err(Refused::Answer(Ok(WriteOk::Create(
                CreateOutcome::TokenInvalid,
            ))));
        }
        conn.prepare_cached(
            "INSERT OR IGNORE INTO submit_tokens (token, merchant_id, expires_at_ms)
             VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| {
            s.execute(params![
                token.as_str(),
                order.merchant_id,
                to_ms(expires_at)
            ])
        })
        .map_err(backend)?;
    }
    let consumed = conn
        .prepare_cached(
            "UPDATE submit_tokens SET used_by = ?1, used_at_ms = ?2
             WHERE token = ?3 AND merchant_id = ?4 AND used_by IS NULL AND expires_at_ms > ?2",
        )
        .and_then(|mut s| {
            s.execute(params![
                order.order_id,
                now_ms,
                token.as_str(),
                order.merchant_id
            ])
        })
        .map_err(backend)?;
    if consumed == 0 {
        let outcome =
            token_refusal(conn, token, order, now)?.unwrap_or(CreateOutcome::TokenInvalid);
        return Err(Refused::Answer(Ok(WriteOk::Create(outcome))));
    }
    Ok(())
}

/// Why `token` cannot admit `order` now, if it cannot (read only).
fn token_refusal(
    conn: &Connection,
    token: &SubmitToken,
    order: &OrderRow,
    now: OffsetDateTime,
) -> Result<Option<CreateOutcome>, Refused> {
    let row: Option<(String, Option<String>, i64)> = conn
        .prepare_cached(
            "SELECT merchant_id, used_by, expires_at_ms FROM submit_tokens WHERE token = ?1",
        )
        .and_then(|mut s| {
            s.query_row([token.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(backend)?;
    Ok(match row {
        // A signed token not used yet has no row: it is good until the expiry it names.
        None if crate::domain::submit_token::signed_expiry(token).is_some_and(|e| e > now) => None,
        Some((merchant, None, expires_at_ms))
            if merchant == order.merchant_id && expires_at_ms > to_ms(now) =>
        {
            None
        }
        Some((merchant, Some(used_by), _)) if merchant == order.merchant_id => Some(
            CreateOutcome::TokenUsed(crate::domain::OrderId::parse(&used_by).ok()),
        ),
        _ => Some(CreateOutcome::TokenInvalid),
    })
}

/// The order already holding `order`'s merchant number, if one does (read only).
fn existing_order(conn: &Connection, order: &OrderRow) -> Result<Option<OrderId>, Refused> {
    let existing: Option<String> = conn
        .prepare_cached(
            "SELECT order_id FROM orders WHERE merchant_id = ?1 AND merchant_order_no = ?2",
        )
        .and_then(|mut s| {
            s.query_row(
                [order.merchant_id.as_str(), order.merchant_order_no.as_str()],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(backend)?;
    existing
        .map(|id| {
            OrderId::parse(&id).map_err(|_| {
                Refused::Answer(Err(StoreError::Backend(format!(
                    "unreadable order id {id:?}"
                ))))
            })
        })
        .transpose()
}

/// Inserts a new order with its events (the merchant's number must be new).
fn create_order(
    conn: &Connection,
    order: &OrderRow,
    events: &[EventRow],
    stored: &mut Vec<StoredEvent>,
) -> Result<WriteOk, Refused> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO orders (order_id, merchant_id, merchant_order_no, status, version, body, created_at_ms, updated_at_ms, open_work)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
        )
        .and_then(|mut s| {
            s.execute(params![
                order.order_id,
                order.merchant_id,
                order.merchant_order_no,
                order.status.as_str(),
                order.version,
                order.body,
                order.created_at_ms,
                order.open_work
            ])
        });
    match inserted {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => {
            // The merchant's number was checked before the admission was written, so this is
            // an order id taken by another order (or a number taken since, answered as such).
            let outcome = match existing_order(conn, order)? {
                Some(id) => Ok(WriteOk::Create(CreateOutcome::Duplicate(id))),
                None => Err(StoreError::Backend(format!("order id collision: {e}"))),
            };
            return Err(Refused::Answer(outcome));
        }
        Err(e) => return Err(backend(e)),
    }
    insert_events(conn, events, stored)?;
    bump_count(conn, order.status, 1)?;
    Ok(WriteOk::Create(CreateOutcome::Created))
}

fn write_timers(conn: &Connection, order_id: &str, timers: &[TimerRow]) -> Result<(), Refused> {
    for t in timers {
        match t {
            TimerRow::Set {
                kind,
                due_at_ms,
                attempt,
            } => conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO timers (order_id, kind, due_at_ms, attempt)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut s| s.execute(params![order_id, kind, due_at_ms, attempt])),
            TimerRow::Ensure {
                kind,
                due_at_ms,
                attempt,
            } => conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO timers (order_id, kind, due_at_ms, attempt)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut s| s.execute(params![order_id, kind, due_at_ms, attempt])),
            TimerRow::Clear(kind) => conn
                .prepare_cached("DELETE FROM timers WHERE order_id = ?1 AND kind = ?2")
                .and_then(|mut s| s.execute(params![order_id, kind])),
        }
        .map_err(backend)?;
    }
    Ok(())
}

/// Reads the earliest due timers by the due-time index (never scanning the table) and leases
/// them, in the one transaction.
fn claim_timers(
    conn: &Connection,
    now_ms: i64,
    lease_until_ms: i64,
    limit: usize,
) -> Result<WriteOk, Refused> {
    let rows: Vec<(String, String, i64, i64)> = conn
        .prepare_cached(
            "SELECT order_id, kind, due_at_ms, attempt FROM timers
             WHERE due_at_ms <= ?1 ORDER BY due_at_ms LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![now_ms, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })
        .map_err(backend)?;
    let mut timers = Vec::with_capacity(rows.len());
    let mut lease = conn
        .prepare_cached("UPDATE timers SET due_at_ms = ?1 WHERE order_id = ?2 AND kind = ?3")
        .map_err(backend)?;
    for (order_id, kind, due_at_ms, attempt) in rows {
        lease
            .execute(params![lease_until_ms, order_id, kind])
            .map_err(backend)?;
        let (Ok(order_id), Some(kind)) = (OrderId::parse(&order_id), TimerKind::parse(&kind))
        else {
            tracing::error!(%order_id, %kind, "unreadable timer row left leased");
            continue;
        };
        timers.push(Timer {
            order_id,
            kind,
            due_at: super::from_ms(due_at_ms),
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
        });
    }
    Ok(WriteOk::Claimed(timers))
}

fn insert_events(
    conn: &Connection,
    events: &[EventRow],
    stored: &mut Vec<StoredEvent>,
) -> Result<(), Refused> {
    if events.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO events (event_id, order_id, version, type, body, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(backend)?;
    let created_at_ms = now_ms();
    for e in events {
        stmt.execute(params![
            e.event_id,
            e.order_id,
            e.version,
            e.event_type,
            &*e.body,
            created_at_ms
        ])
        .map_err(backend)?;
        stored.push(StoredEvent {
            partition: 0,
            seq: conn.last_insert_rowid() as u64,
            event: e.event.clone(),
            encoded: e.body.clone().into(),
        });
    }
    Ok(())
}

fn bump_count(conn: &Connection, status: OrderStatus, delta: i64) -> Result<(), Refused> {
    conn.prepare_cached(
        "INSERT INTO order_status_counts (status, n) VALUES (?1, ?2)
         ON CONFLICT (status) DO UPDATE SET n = n + excluded.n",
    )
    .and_then(|mut s| s.execute(params![status.as_str(), delta]))
    .map_err(backend)?;
    Ok(())
}
