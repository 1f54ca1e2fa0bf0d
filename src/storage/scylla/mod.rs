//! The CQL backend, for ScyllaDB (and Apache Cassandra, which CI runs): on the `scylla` crate,
//! with prepared statements, LWT only where uniqueness or the version check needs it, and every
//! plain write marked idempotent so the driver may retry it. docs/SCYLLA.md has the data model.
//!
//! It keeps everything `paycore serve` stores: an order's own records (`OrderRecords`: tokens,
//! merchant numbers, the order's state with its events and timers), the timers' due-time index
//! (`TimerStore`), the event log (`EventLog`), Kafka command replies (`CommandStore`), status
//! counts and the purge (`upkeep`), merchant notifications (`NotificationStore`) and the ledger
//! (`LedgerStore`).

mod commands;
mod keys;
mod ledger;
pub mod log;
mod notifications;
mod orders;
mod owner;
pub mod schema;
mod timers;
mod upkeep;

use crate::config::scylla::{Consistency as Cons, ScyllaSettings, SerialConsistency as Serial};
use crate::storage::StoreError;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryResult;
use scylla::serialize::batch::BatchValues;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::Batch;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

pub(crate) fn now_ms() -> i64 {
    ms(OffsetDateTime::now_utc())
}

/// A time as CQL stores it: milliseconds since the epoch.
pub(crate) fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) fn be(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The prepared statements, made once per session.
struct Statements {
    insert_token: PreparedStatement,
    take_token: PreparedStatement,
    steal_token: PreparedStatement,
    release_token: PreparedStatement,
    read_token: PreparedStatement,
    take_no: PreparedStatement,
    steal_no: PreparedStatement,
    read_no: PreparedStatement,
    insert_state: PreparedStatement,
    update_state: PreparedStatement,
    insert_event: PreparedStatement,
    set_timer: PreparedStatement,
    clear_timer: PreparedStatement,
    load_order: PreparedStatement,
    order_events: PreparedStatement,
    order_timers: PreparedStatement,
    read_timer: PreparedStatement,
    reschedule_timer: PreparedStatement,
    clear_fired_timer: PreparedStatement,
    ensure_timer: PreparedStatement,
    index_timer: PreparedStatement,
    unindex_timer: PreparedStatement,
    due_in_bucket: PreparedStatement,
    count_in_buckets: PreparedStatement,
    scan_orders: PreparedStatement,
    scan_orders_after: PreparedStatement,
    read_log_partition: PreparedStatement,
    new_log_partition: PreparedStatement,
    claim_log_partition: PreparedStatement,
    insert_entry: PreparedStatement,
    read_entries: PreparedStatement,
    insert_intent: PreparedStatement,
    delete_intent: PreparedStatement,
    read_intents: PreparedStatement,
    read_old_intents: PreparedStatement,
    delete_old_intent: PreparedStatement,
    events_at_version: PreparedStatement,
    events_at_version_serial: PreparedStatement,
    cursor_get: PreparedStatement,
    cursor_set: PreparedStatement,
    cursor_insert: PreparedStatement,
    cursor_drop: PreparedStatement,
    cursors_all: PreparedStatement,
    reserve_reply: PreparedStatement,
    steal_reply: PreparedStatement,
    release_reply: PreparedStatement,
    read_reply: PreparedStatement,
    insert_marker: PreparedStatement,
    read_item: PreparedStatement,
}

/// Statements sent, by kind, since the store opened: what `docs/SCYLLA.md` promises per
/// operation is checked against them (and they are what the benchmark reports).
#[derive(Debug, Default)]
pub struct StatementCounts {
    /// LWT rounds (single statements and conditional batches).
    pub lwt: AtomicU64,
    /// Everything else (reads, plain writes and batches).
    pub plain: AtomicU64,
}

impl StatementCounts {
    /// (LWT rounds, other statements) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.lwt.load(Ordering::Relaxed),
            self.plain.load(Ordering::Relaxed),
        )
    }
}

/// The CQL store. Cloning it is cheap: the clones share the session and every state.
#[derive(Clone)]
pub struct ScyllaStore {
    /// The submit-token key (`store_keys`).
    token_key: crate::domain::TokenKey,
    session: Arc<Session>,
    st: Arc<Statements>,
    /// The ledger's statements (see `ledger`).
    ledger_st: Arc<ledger::Statements>,
    /// The notifications' statements (see `notifications`).
    notify_st: Arc<notifications::Statements>,
    /// The status tallies' and the purge's statements (see `upkeep`).
    upkeep_st: Arc<upkeep::Statements>,
    /// Status tallies as counted so far in this process; one catch-up at a time.
    tallies: Arc<tokio::sync::Mutex<upkeep::Tallies>>,
    /// Set by `close` (or by the owner lease's fence): every statement then answers `Closed`.
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// The owner lease's statements (see `owner`).
    owner_st: Arc<owner::Statements>,
    /// This process's holder id, once it took the owner lease (`Role::Owner`).
    owner: Arc<std::sync::OnceLock<String>>,
    /// Set when the owner lease was lost (or may have been): the store closed itself.
    fenced: Arc<std::sync::atomic::AtomicBool>,
    settings: ScyllaSettings,
    /// LWT statements ask Paxos at this consistency.
    serial: SerialConsistency,
    /// Per timer shard, the oldest minute bucket that may hold due-time entries, once read.
    timer_marks: Arc<timers::Watermarks>,
    /// The event log's positions in this process.
    log: Arc<log::LogState>,
    /// Statements sent.
    pub counts: Arc<StatementCounts>,
    /// Where failed statements are counted (`paycore_storage_errors_total`), once given.
    metrics: Arc<std::sync::OnceLock<Arc<crate::metrics::Metrics>>>,
    /// Test hook: changes are stored and their log step skipped, as by a crash right after.
    #[cfg(test)]
    skip_logging: Arc<std::sync::atomic::AtomicBool>,
    /// Test hook: the next change's write is applied and answers an error, as a coordinator's
    /// timeout after the replicas applied it.
    #[cfg(test)]
    lose_outcome: Arc<std::sync::atomic::AtomicBool>,
    /// Test hook: the due indexes' grace (see `may_be_in_flight`) in ms, when not negative.
    #[cfg(test)]
    index_grace_ms: Arc<std::sync::atomic::AtomicI64>,
}

/// The most keys one `IN` may list: ScyllaDB refuses more than its
/// `max_partition_key_restrictions_per_query` (and `max_clustering_key_restrictions_per_query`),
/// 100 by default.
pub(super) const MAX_IN_KEYS: usize = 100;

/// Connects to the cluster (the keyspace must exist: see `schema::migrate`).
async fn connect(settings: &ScyllaSettings) -> Result<Session, StoreError> {
    let consistency = match settings.consistency {
        Cons::Quorum => Consistency::Quorum,
        Cons::LocalQuorum => Consistency::LocalQuorum,
        Cons::One => Consistency::One,
    };
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if !settings.local_datacenter.is_empty() {
        policy = policy
            .prefer_datacenter(settings.local_datacenter.clone())
            .permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .consistency(consistency)
        .serial_consistency(Some(serial(settings)))
        .request_timeout(Some(Duration::from_millis(settings.request_timeout_ms)))
        .load_balancing_policy(policy.build())
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&settings.contact_points)
        .connection_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .default_execution_profile_handle(profile.into_handle());
    if !settings.username.is_empty() {
        builder = builder.user(&settings.username, settings.password.expose());
    }
    if !settings.tls_ca_file.is_empty() {
        builder = builder.tls_context(Some(tls_context(&settings.tls_ca_file)?));
    }
    builder.build().await.map_err(be)
}

fn serial(settings: &ScyllaSettings) -> SerialConsistency {
    match settings.serial_consistency {
        Serial::Serial => SerialConsistency::Serial,
        Serial::LocalSerial => SerialConsistency::LocalSerial,
    }
}

/// TLS to the nodes, their certificates checked against the CA file (PEM).
fn tls_context(ca_file: &str) -> Result<scylla::client::session::TlsContext, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| StoreError::Backend(format!("storage.scylla.tls_ca_file {ca_file}: {e}")))?
    {
        let cert = cert.map_err(|e| {
            StoreError::Backend(format!("storage.scylla.tls_ca_file {ca_file}: {e}"))
        })?;
        roots.add(cert).map_err(|e| {
            StoreError::Backend(format!("storage.scylla.tls_ca_file {ca_file}: {e}"))
        })?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(be)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config).into())
}

/// What a process opens the keyspace for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `paycore serve`: takes the keyspace's owner lease (see `owner`), then the log.
    Owner,
    /// Reads, and writes that need no log position (cursors): `paycore ledger verify`, the
    /// `log` commands, next to a running owner. A change is refused.
    Reader,
    /// Takes the log without the owner lease: tests that open several stores on one keyspace.
    #[cfg(test)]
    Writer,
}

impl ScyllaStore {
    /// Opens the keyspace to write, taking the log without the owner lease (tests).
    #[cfg(test)]
    pub async fn open(settings: &ScyllaSettings) -> Result<Self, StoreError> {
        Self::open_as(settings, Role::Writer).await
    }

    /// Connects, applies the migrations not applied yet (the keyspace is made when missing),
    /// prepares the statements, and takes what `role` needs.
    pub async fn open_as(settings: &ScyllaSettings, role: Role) -> Result<Self, StoreError> {
        let session = connect(settings).await?;
        schema::migrate(&session, settings).await?;
        session
            .use_keyspace(&settings.keyspace, false)
            .await
            .map_err(be)?;
        let st = Statements::prepare(&session, serial(settings)).await?;
        let ledger_st = ledger::Statements::prepare(&session, serial(settings)).await?;
        let notify_st = notifications::Statements::prepare(&session, serial(settings)).await?;
        let upkeep_st = upkeep::Statements::prepare(&session).await?;
        let owner_st = owner::Statements::prepare(&session, serial(settings)).await?;
        let timer_marks =
            timers::Watermarks::open(&session, serial(settings), "timer_watermarks").await?;
        let token_key = keys::submit_token_key(&session, serial(settings)).await?;
        let store = Self {
            token_key,
            session: Arc::new(session),
            st: Arc::new(st),
            ledger_st: Arc::new(ledger_st),
            notify_st: Arc::new(notify_st),
            upkeep_st: Arc::new(upkeep_st),
            tallies: Arc::default(),
            closed: Arc::default(),
            owner_st: Arc::new(owner_st),
            owner: Arc::default(),
            fenced: Arc::default(),
            serial: serial(settings),
            settings: settings.clone(),
            timer_marks: Arc::new(timer_marks),
            log: Arc::new(log::LogState::new()),
            counts: Arc::new(StatementCounts::default()),
            metrics: Arc::default(),
            #[cfg(test)]
            skip_logging: Arc::default(),
            #[cfg(test)]
            lose_outcome: Arc::default(),
            #[cfg(test)]
            index_grace_ms: Arc::new(std::sync::atomic::AtomicI64::new(-1)),
        };
        match role {
            Role::Reader => store.read_heads().await?,
            Role::Owner => {
                store.take_ownership().await?;
                store.open_log().await?;
            }
            #[cfg(test)]
            Role::Writer => store.open_log().await?,
        }
        Ok(store)
    }

    /// Connects and applies the migrations not applied yet; answers the versions applied now
    /// (`paycore migrate`).
    pub async fn migrate(settings: &ScyllaSettings) -> Result<Vec<i32>, StoreError> {
        let session = connect(settings).await?;
        schema::migrate(&session, settings).await
    }
}

impl ScyllaStore {
    /// Runs a prepared statement (an LWT when it is not idempotent: only LWT are marked so).
    async fn exec(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.open_for_work()?;
        self.count(statement.get_is_idempotent());
        let result = self.session.execute_unpaged(statement, values).await;
        if result.is_err() {
            let read = statement.get_statement().trim_start().starts_with("SELECT");
            self.failed(if read { "read" } else { "write" });
        }
        result.map_err(be)
    }

    /// Counts failed statements in `metrics` from now on.
    pub fn count_errors_in(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn failed(&self, op: &str) {
        if let Some(m) = self.metrics.get() {
            m.ops.storage_errors.with_label_values(&[op]).inc();
        }
    }

    /// Sums one shard's `SELECT COUNT(*)` over the buckets `from..=to`, with no more than
    /// `MAX_IN_KEYS` buckets in one statement; `bind` gives a statement's values for its
    /// buckets.
    async fn count_in_buckets<V: SerializeRow>(
        &self,
        statement: &PreparedStatement,
        from: i64,
        to: i64,
        bind: impl Fn(Vec<i64>) -> V,
    ) -> Result<i64, StoreError> {
        let buckets: Vec<i64> = (from..=to).collect();
        let mut total = 0i64;
        for chunk in buckets.chunks(MAX_IN_KEYS) {
            let rows = self
                .exec(statement, bind(chunk.to_vec()))
                .await?
                .into_rows_result()
                .map_err(be)?;
            let n = rows
                .maybe_first_row::<(i64,)>()
                .map_err(be)?
                .map_or(0, |(n,)| n);
            total = total.saturating_add(n);
        }
        Ok(total)
    }

    /// Runs a batch (conditional when it is not idempotent).
    async fn exec_batch(
        &self,
        batch: &Batch,
        values: impl BatchValues,
    ) -> Result<QueryResult, StoreError> {
        self.open_for_work()?;
        self.count(batch.get_is_idempotent());
        let result = self.session.batch(batch, values).await;
        if result.is_err() {
            self.failed("write");
        }
        result.map_err(be)
    }

    /// Whether a due-index entry (of the timers or the notifications) written at `written_us`
    /// (its `WRITETIME`, µs on the coordinator's clock; `None`: not read) may be the first half
    /// of a write still in flight. Every such write puts its entry first and its row after it,
    /// so a claim can read the entry before the row is there (or before the row carries the
    /// entry's attempt or due time). Deleting it then would leave the row with no entry: a
    /// timer that never fires, a notification never sent. So an entry that does not match
    /// its row is deleted only once it is older than twice the request timeout (by then its
    /// row write has answered, one way or the other); a younger one is passed over and read
    /// again by a later claim. Assumes the nodes' clocks and paycore's agree to well within
    /// that (NTP).
    pub(super) fn may_be_in_flight(&self, written_us: Option<i64>) -> bool {
        let Some(written_us) = written_us else {
            return false;
        };
        let grace_ms = self.index_grace_ms();
        let age_ms = now_ms().saturating_sub(written_us.div_euclid(1_000));
        age_ms < grace_ms
    }

    fn index_grace_ms(&self) -> i64 {
        #[cfg(test)]
        {
            let set = self
                .index_grace_ms
                .load(std::sync::atomic::Ordering::SeqCst);
            if set >= 0 {
                return set;
            }
        }
        i64::try_from(self.settings.request_timeout_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(2)
    }

    /// Test hook: the due indexes' grace (`may_be_in_flight`), `None` for the default.
    #[cfg(test)]
    pub(super) fn set_index_grace(&self, grace: Option<std::time::Duration>) {
        let ms = grace.map_or(-1, |g| i64::try_from(g.as_millis()).unwrap_or(i64::MAX));
        self.index_grace_ms
            .store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// After `close`, every statement answers `Closed`.
    fn open_for_work(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    fn count(&self, idempotent: bool) {
        let counter = if idempotent {
            &self.counts.plain
        } else {
            &self.counts.lwt
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A plain write or read: idempotent (a replay writes the same cells), so the driver may retry it.
pub(super) fn plain(mut p: PreparedStatement) -> PreparedStatement {
    p.set_is_idempotent(true);
    p
}

/// An LWT: not idempotent (a retried round may see its own earlier write), Paxos at `serial`.
pub(super) fn lwt(mut p: PreparedStatement, serial: SerialConsistency) -> PreparedStatement {
    p.set_is_idempotent(false);
    p.set_serial_consistency(Some(serial));
    p
}

/// A read of what an LWT may be deciding on: at SERIAL, so an LWT in flight is completed (or
/// not) first, and the read sees what won.
pub(super) fn serial_read(
    mut p: PreparedStatement,
    serial: SerialConsistency,
) -> PreparedStatement {
    p.set_is_idempotent(true);
    p.set_consistency(match serial {
        SerialConsistency::Serial => Consistency::Serial,
        SerialConsistency::LocalSerial => Consistency::LocalSerial,
    });
    p
}

impl Statements {
    async fn prepare(session: &Session, serial: SerialConsistency) -> Result<Self, StoreError> {
        let lwt = |p| lwt(p, serial);
        let serial_read = |p| serial_read(p, serial);
        let p = |cql: &'static str| async move { session.prepare(cql).await.map_err(be) };
        Ok(Self {
            insert_token: plain(
                p("INSERT INTO submit_tokens (token_id, merchant_id, expires_at) VALUES (?, ?, ?) \
                   USING TTL ? AND TIMESTAMP ?")
                .await?,
            ),
            take_token: lwt(p("UPDATE submit_tokens USING TTL ? SET order_id = ?, taken_at = ? \
                   WHERE token_id = ? IF merchant_id = ? AND expires_at > ? AND order_id = null AND taken_at = null")
            .await?),
            steal_token: lwt(p("UPDATE submit_tokens USING TTL ? SET order_id = ?, taken_at = ? \
                   WHERE token_id = ? IF order_id = ?")
            .await?),
            release_token: lwt(
                p("DELETE order_id, taken_at FROM submit_tokens WHERE token_id = ? IF order_id = ?")
                    .await?,
            ),
            read_token: serial_read(
                p("SELECT merchant_id, expires_at, order_id, taken_at FROM submit_tokens \
                   WHERE token_id = ?")
                .await?,
            ),
            take_no: lwt(p("INSERT INTO merchant_order_nos (merchant_id, merchant_order_no, \
                   order_id, taken_at) VALUES (?, ?, ?, ?) IF NOT EXISTS")
            .await?),
            steal_no: lwt(p("UPDATE merchant_order_nos SET order_id = ?, taken_at = ? \
                   WHERE merchant_id = ? AND merchant_order_no = ? IF order_id = ?")
            .await?),
            read_no: serial_read(
                p("SELECT order_id, taken_at FROM merchant_order_nos \
                   WHERE merchant_id = ? AND merchant_order_no = ?")
                .await?,
            ),
            insert_state: plain(
                p("INSERT INTO orders (order_id, merchant_id, merchant_order_no, status, version, \
                   body, open_work, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
                .await?,
            ),
            update_state: lwt(p("UPDATE orders SET status = ?, version = ?, body = ?, open_work = ?, \
                   updated_at = ? WHERE order_id = ? IF version = ?")
            .await?),
            insert_event: plain(
                p("INSERT INTO orders (order_id, item, event_id, event_type, event_schema, event) \
                   VALUES (?, ?, ?, ?, ?, ?)")
                .await?,
            ),
            set_timer: plain(
                p("INSERT INTO orders (order_id, item, timer_due_at, timer_attempt) \
                   VALUES (?, ?, ?, ?)")
                .await?,
            ),
            clear_timer: plain(p("DELETE FROM orders WHERE order_id = ? AND item = ?").await?),
            load_order: plain(p("SELECT body FROM orders WHERE order_id = ? LIMIT 1").await?),
            order_events: plain(
                p("SELECT event_schema, event FROM orders WHERE order_id = ? \
                   AND item >= 'e:' AND item < 'e;'")
                .await?,
            ),
            order_timers: plain(
                p("SELECT item, timer_due_at, timer_attempt FROM orders WHERE order_id = ? \
                   AND item >= 't:' AND item < 't;'")
                .await?,
            ),
            read_timer: plain(
                p("SELECT timer_due_at, timer_attempt FROM orders WHERE order_id = ? AND item = ?")
                    .await?,
            ),
            reschedule_timer: lwt(p("UPDATE orders SET timer_due_at = ?, timer_attempt = ? \
                   WHERE order_id = ? AND item = ? IF timer_attempt = ?")
            .await?),
            clear_fired_timer: lwt(p(
                "DELETE FROM orders WHERE order_id = ? AND item = ? IF timer_attempt = ?"
            )
            .await?),
            ensure_timer: lwt(p("INSERT INTO orders (order_id, item, timer_due_at, timer_attempt) \
                   VALUES (?, ?, ?, ?) IF NOT EXISTS")
            .await?),
            index_timer: plain(
                p("INSERT INTO timer_index (shard, bucket, due_at, order_id, kind, attempt) \
                   VALUES (?, ?, ?, ?, ?, ?)")
                .await?,
            ),
            unindex_timer: plain(
                p("DELETE FROM timer_index WHERE shard = ? AND bucket = ? AND due_at = ? \
                   AND order_id = ? AND kind = ?")
                .await?,
            ),
            due_in_bucket: plain(
                p("SELECT due_at, order_id, kind, attempt, WRITETIME(attempt) FROM timer_index \
                   WHERE shard = ? AND bucket = ? AND due_at <= ? LIMIT ?")
                .await?,
            ),
            count_in_buckets: plain(
                p("SELECT COUNT(*) FROM timer_index WHERE shard = ? AND bucket IN ? AND due_at < ?")
                    .await?,
            ),
            scan_orders: plain(
                p("SELECT DISTINCT order_id, open_work FROM orders LIMIT ?").await?,
            ),
            scan_orders_after: plain(
                p("SELECT DISTINCT order_id, open_work FROM orders \
                   WHERE token(order_id) > token(?) LIMIT ?")
                .await?,
            ),
            read_log_partition: serial_read(
                p("SELECT epoch, start FROM log_partitions WHERE partition = ?").await?,
            ),
            new_log_partition: lwt(p(
                "INSERT INTO log_partitions (partition, epoch, start) VALUES (?, ?, ?) IF NOT EXISTS"
            )
            .await?),
            claim_log_partition: lwt(p(
                "UPDATE log_partitions SET epoch = ?, start = ? WHERE partition = ? IF epoch = ?"
            )
            .await?),
            insert_entry: plain(
                p("INSERT INTO event_log (partition, block, seq, order_id, event_id, version, \
                   event_schema, event) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
                .await?,
            ),
            read_entries: plain(
                p("SELECT seq, event_schema, event FROM event_log WHERE partition = ? \
                   AND block = ? AND seq > ? AND seq <= ? LIMIT ?")
                .await?,
            ),

            insert_intent: plain(
                p("INSERT INTO change_intents (partition, order_id, version, event_id) \
                   VALUES (?, ?, ?, ?)")
                .await?,
            ),
            delete_intent: plain(
                p("DELETE FROM change_intents WHERE partition = ? AND order_id = ? \
                   AND version = ? AND event_id = ?")
                .await?,
            ),
            read_intents: plain(
                p("SELECT order_id, version, event_id FROM change_intents WHERE partition = ?")
                    .await?,
            ),
            read_old_intents: plain(
                p("SELECT order_id, version FROM log_intents WHERE partition = ?").await?,
            ),
            delete_old_intent: plain(
                p("DELETE FROM log_intents WHERE partition = ? AND order_id = ? AND version = ?")
                    .await?,
            ),
            events_at_version: plain(
                p("SELECT event_schema, event FROM orders WHERE order_id = ? \
                   AND item >= ? AND item < ?")
                .await?,
            ),
            events_at_version_serial: serial_read(
                p("SELECT event_schema, event FROM orders WHERE order_id = ? \
                   AND item >= ? AND item < ?")
                .await?,
            ),
            cursor_get: plain(
                p("SELECT seq FROM log_cursors WHERE consumer = ? AND partition = ?").await?,
            ),
            cursor_set: lwt(p("UPDATE log_cursors SET seq = ? WHERE consumer = ? AND partition = ? \
                   IF seq < ?")
            .await?),
            cursor_insert: lwt(p("INSERT INTO log_cursors (consumer, partition, seq) \
                   VALUES (?, ?, ?) IF NOT EXISTS")
            .await?),
            cursor_drop: lwt(p(
                "DELETE FROM log_cursors WHERE consumer = ? AND partition = ? IF EXISTS"
            )
            .await?),
            cursors_all: plain(p("SELECT consumer, partition, seq FROM log_cursors").await?),
            reserve_reply: lwt(p("INSERT INTO command_replies (merchant_id, request_id, order_id, \
                   taken_at, pending, command_hash, status, body, created_at) \
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?")
            .await?),
            steal_reply: lwt(p("UPDATE command_replies USING TTL ? SET order_id = ?, taken_at = ?, \
                   pending = ?, command_hash = ?, status = ?, body = ?, created_at = ? \
                   WHERE merchant_id = ? AND request_id = ? IF order_id = ? AND pending = true")
            .await?),
            release_reply: lwt(p("DELETE FROM command_replies WHERE merchant_id = ? \
                   AND request_id = ? IF order_id = ? AND pending = true")
            .await?),
            read_reply: serial_read(
                p("SELECT order_id, taken_at, pending, command_hash, status, body, created_at \
                   FROM command_replies WHERE merchant_id = ? AND request_id = ?")
                .await?,
            ),
            insert_marker: plain(p("INSERT INTO orders (order_id, item) VALUES (?, ?)").await?),
            read_item: plain(
                p("SELECT item FROM orders WHERE order_id = ? AND item = ?").await?,
            ),
        })
    }
}

#[cfg(test)]
mod ledger_tests;
#[cfg(test)]
mod notification_tests;
#[cfg(test)]
mod owner_tests;
#[cfg(test)]
mod tests;
