//! Versioned schema migrations for the SQLite store. A migration is appended, never edited:
//! a database records which versions it has, and `migrate` applies the missing ones in order.

use rusqlite::Connection;

/// (version, SQL) in the order they apply.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "
    CREATE TABLE orders (
        order_id          TEXT PRIMARY KEY,
        merchant_id       TEXT NOT NULL,
        merchant_order_no TEXT NOT NULL,
        status            TEXT NOT NULL,
        version           INTEGER NOT NULL,
        body              TEXT NOT NULL,
        created_at_ms     INTEGER NOT NULL,
        updated_at_ms     INTEGER NOT NULL,
        UNIQUE (merchant_id, merchant_order_no)
    ) WITHOUT ROWID;
    CREATE TABLE submit_tokens (
        token         TEXT PRIMARY KEY,
        merchant_id   TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        used_by       TEXT,
        used_at_ms    INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX submit_tokens_expiry ON submit_tokens (expires_at_ms);
    CREATE TABLE events (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id      TEXT NOT NULL UNIQUE,
        order_id      TEXT NOT NULL,
        version       INTEGER NOT NULL,
        type          TEXT NOT NULL,
        body          TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE INDEX events_order ON events (order_id, version);
    CREATE TABLE order_status_counts (
        status TEXT PRIMARY KEY,
        n      INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE stream_cursors (
        name TEXT PRIMARY KEY,
        seq  INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    ),
    (
        2,
        "
    CREATE TABLE timers (
        order_id  TEXT NOT NULL,
        kind      TEXT NOT NULL,
        due_at_ms INTEGER NOT NULL,
        attempt   INTEGER NOT NULL,
        PRIMARY KEY (order_id, kind)
    ) WITHOUT ROWID;
    CREATE INDEX timers_due ON timers (due_at_ms);
    ALTER TABLE orders ADD COLUMN open_work INTEGER NOT NULL DEFAULT 0;
    UPDATE orders SET open_work = 1 WHERE status IN ('CREATED', 'PAYING');
    CREATE INDEX orders_open_work ON orders (order_id) WHERE open_work = 1;
    CREATE TABLE health_probe (
        id    INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL
    );
    ",
    ),
    (
        3,
        "
    CREATE TABLE notifications (
        notification_id TEXT PRIMARY KEY,
        order_id        TEXT NOT NULL,
        merchant_id     TEXT NOT NULL,
        event_id        TEXT NOT NULL,
        event_type      TEXT NOT NULL,
        version         INTEGER NOT NULL,
        url             TEXT NOT NULL,
        body            BLOB NOT NULL,
        status          TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        schedule_pos    INTEGER NOT NULL,
        last_status     INTEGER,
        last_error      TEXT,
        next_attempt_ms INTEGER NOT NULL,
        created_ms      INTEGER NOT NULL,
        updated_ms      INTEGER NOT NULL
    );
    CREATE INDEX notifications_due ON notifications (next_attempt_ms) WHERE status = 'PENDING';
    CREATE INDEX notifications_order ON notifications (order_id, version);
    ",
    ),
    (
        4,
        "
    CREATE TABLE ledger_transactions (
        txn_id      TEXT PRIMARY KEY,
        order_id    TEXT NOT NULL,
        merchant_id TEXT NOT NULL,
        event_id    TEXT NOT NULL,
        kind        TEXT NOT NULL,
        resolves    TEXT,
        reference   TEXT,
        created_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX ledger_transactions_order ON ledger_transactions (order_id);
    CREATE TABLE ledger_postings (
        txn_id   TEXT NOT NULL,
        idx      INTEGER NOT NULL,
        account  TEXT NOT NULL,
        currency TEXT NOT NULL,
        amount   INTEGER NOT NULL,
        PRIMARY KEY (txn_id, idx)
    ) WITHOUT ROWID;
    CREATE TABLE ledger_balances (
        account     TEXT NOT NULL,
        currency    TEXT NOT NULL,
        merchant_id TEXT,
        balance     INTEGER NOT NULL,
        inflow      INTEGER NOT NULL,
        outflow     INTEGER NOT NULL,
        last_txn_id TEXT NOT NULL,
        updated_ms  INTEGER NOT NULL,
        PRIMARY KEY (account, currency)
    ) WITHOUT ROWID;
    CREATE INDEX ledger_balances_merchant ON ledger_balances (merchant_id)
        WHERE merchant_id IS NOT NULL;
    ",
    ),
    (
        5,
        "
    CREATE TABLE command_replies (
        merchant_id   TEXT NOT NULL,
        request_id    TEXT NOT NULL,
        command_hash  TEXT NOT NULL,
        status        INTEGER NOT NULL,
        body          BLOB NOT NULL,
        order_id      TEXT,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (merchant_id, request_id)
    ) WITHOUT ROWID;
    CREATE INDEX command_replies_created ON command_replies (created_at_ms);
    ",
    ),
];

/// Applies every migration the database lacks, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<i64> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY,
             applied_at_ms INTEGER NOT NULL
         )",
    )?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    let mut latest = current;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?1, ?2)",
            (version, super::now_ms()),
        )?;
        tx.commit()?;
        latest = *version;
    }
    Ok(latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_is_idempotent_and_records_versions() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("m.db")).unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), 5);
        assert_eq!(migrate(&mut conn).unwrap(), 5);
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 5);
    }
}
