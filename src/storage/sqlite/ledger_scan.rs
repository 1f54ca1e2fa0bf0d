//! The whole-ledger checks of `LedgerStore::scan_ledger` as SQL over every stored row: each
//! transaction balanced per currency, no orphan postings or empty transactions, every hold
//! resolved at most once and only by a post or void of its own order, every row decodable, and
//! every balance snapshot equal to the sum of its account's postings. Read-only; findings are
//! bounded.

use super::be;
use crate::domain::ledger::{Account, TxnKind, check_currency};
use crate::storage::{Finding, LedgerScan, StoreError};
use rusqlite::Connection;

/// Pushes a finding while there is room; counts every one.
struct Findings {
    max: usize,
    found: Vec<Finding>,
}

impl Findings {
    fn push(&mut self, check: &'static str, detail: String) {
        if self.found.len() < self.max {
            self.found.push(Finding { check, detail });
        }
    }
}

/// Runs `sql` (its rows rendered by `show`) and adds a finding per row.
fn check<F>(
    c: &Connection,
    f: &mut Findings,
    check: &'static str,
    sql: &str,
    show: F,
) -> Result<(), StoreError>
where
    F: Fn(&rusqlite::Row<'_>) -> rusqlite::Result<String>,
{
    let mut stmt = c.prepare(sql).map_err(be)?;
    let mut rows = stmt.query([f.max as i64]).map_err(be)?;
    while let Some(row) = rows.next().map_err(be)? {
        f.push(check, show(row).map_err(be)?);
    }
    Ok(())
}

pub(crate) fn scan(c: &Connection, max: usize) -> Result<LedgerScan, StoreError> {
    let count = |sql: &str| -> Result<u64, StoreError> {
        c.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(be)
    };
    let transactions = count("SELECT COUNT(*) FROM ledger_transactions")?;
    let postings = count("SELECT COUNT(*) FROM ledger_postings")?;
    let mut f = Findings {
        max,
        found: Vec::new(),
    };
    // SQLite's SUM fails on integer overflow rather than wrapping: that fails the scan loudly.
    check(
        c,
        &mut f,
        "unbalanced",
        "SELECT txn_id, currency, SUM(amount) FROM ledger_postings
         GROUP BY txn_id, currency HAVING SUM(amount) <> 0 LIMIT ?1",
        |r| {
            Ok(format!(
                "transaction {}: its {} postings sum to {}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?
            ))
        },
    )?;
    check(
        c,
        &mut f,
        "orphan_posting",
        "SELECT p.txn_id, p.idx FROM ledger_postings p
         WHERE NOT EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.txn_id = p.txn_id) LIMIT ?1",
        |r| {
            Ok(format!(
                "posting {} of transaction {} has no transaction",
                r.get::<_, i64>(1)?,
                r.get::<_, String>(0)?
            ))
        },
    )?;
    check(
        c,
        &mut f,
        "empty_transaction",
        "SELECT t.txn_id FROM ledger_transactions t
         WHERE NOT EXISTS (SELECT 1 FROM ledger_postings p WHERE p.txn_id = t.txn_id) LIMIT ?1",
        |r| {
            Ok(format!(
                "transaction {} has no postings",
                r.get::<_, String>(0)?
            ))
        },
    )?;
    check(
        c,
        &mut f,
        "resolved_twice",
        "SELECT resolves, COUNT(*), GROUP_CONCAT(txn_id, ' ') FROM ledger_transactions
         WHERE resolves IS NOT NULL GROUP BY resolves HAVING COUNT(*) > 1 LIMIT ?1",
        |r| {
            Ok(format!(
                "hold {} is resolved {} times ({})",
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?
            ))
        },
    )?;
    check(
        c,
        &mut f,
        "bad_resolution",
        "SELECT t.txn_id, t.kind, t.resolves FROM ledger_transactions t
         LEFT JOIN ledger_transactions h ON h.txn_id = t.resolves
         WHERE (t.resolves IS NOT NULL AND (h.txn_id IS NULL OR h.kind <> 'hold'
                OR h.order_id <> t.order_id OR t.kind NOT IN ('post', 'void')))
            OR (t.resolves IS NULL AND t.kind = 'void')
         LIMIT ?1",
        |r| {
            Ok(format!(
                "{} {} resolves {:?}, which is not a hold of its order",
                r.get::<_, String>(1)?,
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(2)?
            ))
        },
    )?;
    // Each balance snapshot against its postings, both ways (an account with postings and no
    // snapshot, a snapshot with no postings).
    check(
        c,
        &mut f,
        "balance_drift",
        "WITH sums AS (
             SELECT account, currency, SUM(amount) AS net,
                    SUM(CASE WHEN amount > 0 THEN amount ELSE 0 END) AS inflow,
                    SUM(CASE WHEN amount < 0 THEN -amount ELSE 0 END) AS outflow
             FROM ledger_postings GROUP BY account, currency)
         SELECT s.account, s.currency, s.net, s.inflow, s.outflow, b.balance, b.inflow, b.outflow
         FROM sums s LEFT JOIN ledger_balances b
              ON b.account = s.account AND b.currency = s.currency
         WHERE b.balance IS NOT s.net OR b.inflow IS NOT s.inflow OR b.outflow IS NOT s.outflow
         UNION ALL
         SELECT b.account, b.currency, NULL, NULL, NULL, b.balance, b.inflow, b.outflow
         FROM ledger_balances b
         WHERE NOT EXISTS (SELECT 1 FROM sums s
                           WHERE s.account = b.account AND s.currency = b.currency)
         LIMIT ?1",
        |r| {
            Ok(format!(
                "{} {}: postings net {:?} (in {:?}, out {:?}), snapshot {:?} (in {:?}, out {:?})",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, Option<i64>>(7)?
            ))
        },
    )?;
    // Rows that do not decode: unknown kinds, malformed accounts or currencies, zero amounts.
    let mut stmt = c
        .prepare("SELECT DISTINCT kind FROM ledger_transactions")
        .map_err(be)?;
    let kinds = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(be)?;
    for k in kinds.iter().filter(|k| TxnKind::parse(k).is_none()) {
        f.push("bad_row", format!("unknown transaction kind {k:?}"));
    }
    let mut stmt = c
        .prepare("SELECT DISTINCT account, currency FROM ledger_postings")
        .map_err(be)?;
    let accounts = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(be)?;
    for (account, currency) in &accounts {
        if let Err(e) = Account::parse(account) {
            f.push("bad_row", e.to_string());
        }
        if let Err(e) = check_currency(currency) {
            f.push("bad_row", format!("{account}: {e}"));
        }
    }
    check(
        c,
        &mut f,
        "bad_row",
        "SELECT txn_id, idx FROM ledger_postings WHERE amount = 0 LIMIT ?1",
        |r| {
            Ok(format!(
                "posting {} of transaction {} has amount zero",
                r.get::<_, i64>(1)?,
                r.get::<_, String>(0)?
            ))
        },
    )?;
    Ok(LedgerScan {
        transactions,
        postings,
        findings: f.found,
    })
}
