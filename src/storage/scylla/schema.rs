//! The CQL schema as numbered migrations, applied in order at start (and by `paycore migrate`).
//! Every statement is idempotent (`IF NOT EXISTS`), so a migration cut short by a crash is run
//! again whole; a migration counts as applied once its row is in `schema_migrations`.
//!
//! What each table holds, and why it is shaped so (see docs/SCYLLA.md):
//! - `submit_tokens`: one partition per token; the create's first LWT takes it for an order.
//! - `merchant_order_nos`: one partition per (merchant, number); the create's second LWT.
//! - `orders`: one partition per order. Its state is in static columns (so `IF version = ?`
//!   guards the whole partition) and its events and timers are clustering rows of the same
//!   partition (`item` = `e:<version>:<event id>` or `t:<kind>`), so a change and what it writes
//!   are one single-partition conditional batch.
//! - `timer_index`: when timers are due, partitioned by (shard of the order, due minute); an
//!   entry only wakes the order and is checked against the order's own timer row when claimed.
//! - `timer_watermarks`: per shard, the oldest minute bucket that may still hold entries.
//! - `log_partitions`, `event_log`, `change_intents`, `log_cursors`: the event log, one
//!   partition per shard (see `log`). `log_intents` (migration 1) held intents by version alone,
//!   which two changes tried at one version share; it is only read, for intents left by a
//!   paycore from before migration 4.
//! - `command_replies`: Kafka command replies by (merchant, request id) (see `commands`).
//! - `status_tallies`, `log_purged`: orders per status counted from the log, and how far the
//!   log is purged (see `upkeep`).
//! - `owner_lease`: which `paycore serve` owns the keyspace (see `owner`).
//! - `store_keys`: the key submit tokens are signed with, made by the first open (`keys`).

use super::{ScyllaStore, be};
use crate::config::scylla::{Dialect, ScyllaSettings};
use crate::storage::StoreError;
use scylla::client::session::Session;
use scylla::value::CqlTimestamp;

/// (version, name, statements; `{ks}` is the keyspace). Append only: a released migration is
/// never edited.
pub const MIGRATIONS: &[(i32, &str, &[&str])] = &[
    (
        1,
        "tokens, merchant numbers, orders with their events and timers, the timer index, the event log, command replies",
        &[
            "CREATE TABLE IF NOT EXISTS {ks}.submit_tokens (
            token_id    text PRIMARY KEY,
            merchant_id text,
            expires_at  timestamp,
            order_id    text,
            taken_at    timestamp
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.merchant_order_nos (
            merchant_id       text,
            merchant_order_no text,
            order_id          text,
            taken_at          timestamp,
            PRIMARY KEY ((merchant_id, merchant_order_no))
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.orders (
            order_id          text,
            item              text,
            merchant_id       text static,
            merchant_order_no text static,
            status            text static,
            version           bigint static,
            body              text static,
            open_work         boolean static,
            created_at        timestamp static,
            updated_at        timestamp static,
            event_id          text,
            event_type        text,
            event_schema      int,
            event             text,
            timer_due_at      timestamp,
            timer_attempt     int,
            PRIMARY KEY (order_id, item)
        ) WITH CLUSTERING ORDER BY (item ASC)",
            "CREATE TABLE IF NOT EXISTS {ks}.timer_index (
            shard    int,
            bucket   bigint,
            due_at   timestamp,
            order_id text,
            kind     text,
            attempt  int,
            PRIMARY KEY ((shard, bucket), due_at, order_id, kind)
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.timer_watermarks (
            shard  int PRIMARY KEY,
            bucket bigint
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.log_partitions (
            partition int PRIMARY KEY,
            epoch     bigint,
            start     bigint
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.event_log (
            partition    int,
            block        bigint,
            seq          bigint,
            order_id     text,
            event_id     text,
            version      bigint,
            event_schema int,
            event        text,
            PRIMARY KEY ((partition, block), seq)
        ) WITH CLUSTERING ORDER BY (seq ASC)",
            "CREATE TABLE IF NOT EXISTS {ks}.log_intents (
            partition int,
            order_id  text,
            version   bigint,
            PRIMARY KEY ((partition), order_id, version)
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.command_replies (
            merchant_id  text,
            request_id   text,
            order_id     text,
            taken_at     timestamp,
            pending      boolean,
            command_hash text,
            status       int,
            body         blob,
            created_at   timestamp,
            PRIMARY KEY ((merchant_id, request_id))
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.status_tallies (
            partition int,
            status    text,
            n         bigint,
            seq       bigint static,
            PRIMARY KEY ((partition), status)
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.log_purged (
            partition int PRIMARY KEY,
            block     bigint
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.log_cursors (
            consumer  text,
            partition int,
            seq       bigint,
            PRIMARY KEY ((consumer), partition)
        )",
        ],
    ),
    (
        2,
        "the ledger: transactions with their postings, per-account views, balance snapshots",
        super::ledger::DDL,
    ),
    (
        3,
        "merchant notifications and their delivery schedule",
        super::notifications::DDL,
    ),
    (
        4,
        "change intents keyed by the change (its first event id), not only its version",
        &["CREATE TABLE IF NOT EXISTS {ks}.change_intents (
            partition int,
            order_id  text,
            version   bigint,
            event_id  text,
            PRIMARY KEY ((partition), order_id, version, event_id)
        )"],
    ),
    (
        5,
        "the keyspace's owner lease: one paycore serve at a time",
        super::owner::DDL,
    ),
    (
        6,
        "store keys: the key submit tokens are signed with",
        &["CREATE TABLE IF NOT EXISTS {ks}.store_keys (
            name  text PRIMARY KEY,
            value blob
        )"],
    ),
];

/// The keyspace's DDL for the dialect: ScyllaDB needs tablets off for LWT; Cassandra has no
/// such option and refuses it.
pub fn keyspace_ddl(settings: &ScyllaSettings) -> String {
    let mut ddl = format!(
        "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {} AND durable_writes = true",
        settings.keyspace,
        settings.replication_cql()
    );
    if settings.dialect == Dialect::Scylladb {
        ddl.push_str(" AND tablets = {'enabled': false}");
    }
    ddl
}

/// How long one schema statement may take: a schema change waits for the nodes to agree on
/// it, which takes far longer than a read or write (`request_timeout_ms`) on a busy cluster.
const DDL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A schema statement, with the schema changes' own timeout.
fn ddl(text: String) -> scylla::statement::unprepared::Statement {
    let mut st = scylla::statement::unprepared::Statement::new(text);
    st.set_request_timeout(Some(DDL_TIMEOUT));
    st
}

/// Makes the keyspace when missing and applies every migration not applied yet; answers the
/// versions applied now.
pub async fn migrate(session: &Session, settings: &ScyllaSettings) -> Result<Vec<i32>, StoreError> {
    session
        .query_unpaged(ddl(keyspace_ddl(settings)), ())
        .await
        .map_err(|e| match settings.dialect {
            Dialect::Scylladb if e.to_string().contains("tablets") => StoreError::Backend(format!(
                "{e} (an Apache Cassandra server? set storage.scylla.dialect = \"cassandra\")"
            )),
            _ => be(e),
        })?;
    let ks = &settings.keyspace;
    session
        .query_unpaged(
            ddl(format!(
                "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (
                    version int PRIMARY KEY, name text, applied_at timestamp)"
            )),
            (),
        )
        .await
        .map_err(be)?;
    let applied = applied_versions(session, ks).await?;
    let mut now_applied = Vec::new();
    for (version, name, statements) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        for statement in *statements {
            // `{ks}` stands for the keyspace: the session may have none in use yet.
            session
                .query_unpaged(ddl(statement.replace("{ks}", ks)), ())
                .await
                .map_err(be)?;
        }
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {ks}.schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"
                ),
                (*version, *name, CqlTimestamp(super::now_ms())),
            )
            .await
            .map_err(be)?;
        tracing::info!(version, name, keyspace = %ks, "CQL migration applied");
        now_applied.push(*version);
    }
    Ok(now_applied)
}

/// The versions recorded in `schema_migrations`, sorted.
async fn applied_versions(session: &Session, ks: &str) -> Result<Vec<i32>, StoreError> {
    let mut versions: Vec<i32> = session
        .query_unpaged(format!("SELECT version FROM {ks}.schema_migrations"), ())
        .await
        .map_err(be)?
        .into_rows_result()
        .map_err(be)?
        .rows::<(i32,)>()
        .map_err(be)?
        .map(|r| r.map(|(v,)| v))
        .collect::<Result<_, _>>()
        .map_err(be)?;
    versions.sort_unstable();
    Ok(versions)
}

impl ScyllaStore {
    /// The migrations recorded as applied, by version.
    pub async fn applied_migrations(&self) -> Result<Vec<i32>, StoreError> {
        applied_versions(&self.session, &self.settings.keyspace).await
    }
}
