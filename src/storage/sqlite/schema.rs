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
    // `orders` as a rowid table. Without a rowid, a table's rows live in an index b-tree, whose
    // cells hold at most about 1,000 bytes on a 4 KiB page; an order's body is about 1 KiB, so
    // every row had an overflow page and every write of an order wrote two pages (measured:
    // 4,800 orders in 935 leaf pages and 4,800 overflow pages, 16.7 MB of them unused;
    // loadtest/ANALYSIS.md). A rowid table keeps a row of up to about 4,000 bytes on its leaf.
    // The copy is one pass over the table, inside this migration's transaction.
    (
        6,
        "
    CREATE TABLE orders_rowid (
        order_id          TEXT NOT NULL PRIMARY KEY,
        merchant_id       TEXT NOT NULL,
        merchant_order_no TEXT NOT NULL,
        status            TEXT NOT NULL,
        version           INTEGER NOT NULL,
        body              TEXT NOT NULL,
        created_at_ms     INTEGER NOT NULL,
        updated_at_ms     INTEGER NOT NULL,
        open_work         INTEGER NOT NULL DEFAULT 0,
        UNIQUE (merchant_id, merchant_order_no)
    );
    INSERT INTO orders_rowid (order_id, merchant_id, merchant_order_no, status, version, body,
                              created_at_ms, updated_at_ms, open_work)
        SELECT order_id, merchant_id, merchant_order_no, status, version, body,
               created_at_ms, updated_at_ms, open_work
        FROM orders ORDER BY order_id;
    DROP TABLE orders;
    ALTER TABLE orders_rowid RENAME TO orders;
    CREATE INDEX orders_open_work ON orders (order_id) WHERE open_work = 1;
    ",
    ),
    // Submit tokens are signed (domain::submit_token) with a key kept here, made at the first
    // open after this migration; `submit_tokens` holds a signed token from its first use on.
    (
        7,
        "
    CREATE TABLE store_keys (
        name  TEXT NOT NULL PRIMARY KEY,
        value BLOB NOT NULL
    );
    ",
    ),
    // `command_replies` as a rowid table, for the reason `orders` became one in 6: a stored
    // reply's body is about 1 KiB (a created order's view), so without a rowid every reply had
    // an overflow page, about eight fat cells filled a leaf, and a request id's random place
    // in the key split leaves often. As a rowid table the rows are appended, and the key is a
    // separate index of small cells. Measured with the same rows (loadtest/ANALYSIS.md): 3.3x
    // fewer pages and inserts about 3x faster. Rows are appended in the order they are stored,
    // so the oldest are the first by rowid and the purge reads them by rowid: the index by age
    // (one more insert per reply) goes. The copy is one pass, oldest first, inside this
    // migration's transaction.
    (
        8,
        "
    CREATE TABLE command_replies_rowid (
        merchant_id   TEXT NOT NULL,
        request_id    TEXT NOT NULL,
        command_hash  TEXT NOT NULL,
        status        INTEGER NOT NULL,
        body          BLOB NOT NULL,
        order_id      TEXT,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (merchant_id, request_id)
    );
    INSERT INTO command_replies_rowid (merchant_id, request_id, command_hash, status, body,
                                       order_id, created_at_ms)
        SELECT merchant_id, request_id, command_hash, status, body, order_id, created_at_ms
        FROM command_replies ORDER BY created_at_ms;
    DROP TABLE command_replies;
    ALTER TABLE command_replies_rowid RENAME TO command_replies;
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
        assert_eq!(migrate(&mut conn).unwrap(), 8);
        assert_eq!(migrate(&mut conn).unwrap(), 8);
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 8);
    }

    /// A database in `dir` with the migrations up to `version` applied, as an older paycore
    /// left it.
    fn migrated_to(dir: &tempfile::TempDir, version: i64) -> Connection {
        let conn = Connection::open(dir.path().join("m.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)",
        )
        .unwrap();
        for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v <= version) {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [v])
                .unwrap();
        }
        conn
    }

    /// A database made before migration 6 keeps its orders, every column of them, and its
    /// open-work index, and `orders` becomes a rowid table.
    #[test]
    fn orders_become_a_rowid_table_with_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = migrated_to(&dir, 5);
        assert!(
            conn.prepare("SELECT rowid FROM orders").is_err(),
            "before 6, orders has no rowid"
        );
        let body = "x".repeat(1500);
        for (id, no, open) in [("ord_a", "n1", 1), ("ord_b", "n2", 0)] {
            conn.execute(
                "INSERT INTO orders VALUES (?1, 'm', ?2, 'PAYING', 3, ?3, 10, 20, ?4)",
                rusqlite::params![id, no, body, open],
            )
            .unwrap();
        }
        assert_eq!(migrate(&mut conn).unwrap(), 8);
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM orders", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        let names: (String, String, String) = conn
            .query_row(
                "SELECT merchant_id, merchant_order_no, status FROM orders WHERE order_id = 'ord_a'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(names, ("m".into(), "n1".into(), "PAYING".into()));
        let numbers: (i64, i64, i64, i64, i64, i64) = conn
            .query_row(
                "SELECT rowid, version, length(body), created_at_ms, updated_at_ms, open_work
                 FROM orders WHERE order_id = 'ord_a'",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            (numbers.1, numbers.2, numbers.3, numbers.4, numbers.5),
            (3, 1500, 10, 20, 1)
        );
        assert!(numbers.0 > 0, "orders now has a rowid");
        let open_ids: Vec<String> = conn
            .prepare("SELECT order_id FROM orders INDEXED BY orders_open_work WHERE open_work = 1")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(open_ids, vec!["ord_a".to_string()]);
        // The keys still refuse a second row.
        assert!(
            conn.execute(
                "INSERT INTO orders VALUES ('ord_a', 'm', 'n9', 'CREATED', 1, '{}', 0, 0, 1)",
                [],
            )
            .is_err()
        );
        assert!(
            conn.execute(
                "INSERT INTO orders VALUES ('ord_c', 'm', 'n1', 'CREATED', 1, '{}', 0, 0, 1)",
                [],
            )
            .is_err()
        );
    }

    /// A database made before migration 8 keeps its stored replies, every column of them,
    /// `command_replies` becomes a rowid table, and its key still refuses a second reply for a
    /// request id (the upsert that stores replies names that key).
    #[test]
    fn command_replies_become_a_rowid_table_with_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = migrated_to(&dir, 7);
        assert!(
            conn.prepare("SELECT rowid FROM command_replies").is_err(),
            "before 8, command_replies has no rowid"
        );
        let body = vec![7u8; 1500];
        for (request, order, at) in [("r1", Some("ord_a"), 10), ("r2", None, 5)] {
            conn.execute(
                "INSERT INTO command_replies VALUES ('m', ?1, 'h', 201, ?2, ?3, ?4)",
                rusqlite::params![request, body, order, at],
            )
            .unwrap();
        }
        assert_eq!(migrate(&mut conn).unwrap(), 8);
        type Row = (String, String, i64, Vec<u8>, Option<String>, i64);
        let rows: Vec<Row> = conn
            .prepare(
                "SELECT request_id, command_hash, status, body, order_id, created_at_ms
                 FROM command_replies WHERE merchant_id = 'm' ORDER BY request_id",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (
                    "r1".into(),
                    "h".into(),
                    201,
                    body.clone(),
                    Some("ord_a".into()),
                    10
                ),
                ("r2".into(), "h".into(), 201, body.clone(), None, 5),
            ]
        );
        let rowid: i64 = conn
            .query_row(
                "SELECT rowid FROM command_replies WHERE request_id = 'r1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(rowid > 0, "command_replies now has a rowid");
        // Copied oldest first, so the rowid order is the age order the purge reads.
        let by_age: Vec<String> = conn
            .prepare("SELECT request_id FROM command_replies ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(by_age, vec!["r2".to_string(), "r1".to_string()]);
        let again = conn
            .execute(
                "INSERT INTO command_replies VALUES ('m', 'r1', 'other', 409, x'00', NULL, 20)
                 ON CONFLICT (merchant_id, request_id) DO NOTHING",
                [],
            )
            .unwrap();
        assert_eq!(again, 0, "a second reply for r1 is not stored");
        assert!(
            conn.execute(
                "INSERT INTO command_replies VALUES ('m', 'r1', 'other', 409, x'00', NULL, 20)",
                [],
            )
            .is_err()
        );
    }
}
