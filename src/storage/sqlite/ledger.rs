//! SQL of the ledger (migration 4): `ledger_transactions` (id PK, indexed by order),
//! `ledger_postings` (keyed by transaction and position) and `ledger_balances`, one snapshot
//! row per account and currency. Writes are `WriteOp::Ledger` ops applied by the single writer,
//! so a batch, its balance updates and the consumer's cursor commit in one transaction.
//!
//! Why snapshot rows and not `SUM` at read time: a merchant's balances are read by an API call,
//! and summing every posting an account ever had grows without bound. The snapshot of an
//! account moves only by the postings of transactions *newly* stored in the same transaction
//! (a replayed transaction is skipped before it touches a balance), records the last
//! transaction it applied, and is checked against the sum of its postings by `scan_ledger`
//! (`paycore ledger verify`, see `ledger_scan`), so it can always be rebuilt from the postings.

use super::writer::{Refused, WriteOk, WriteOp, backend};
use super::{SqliteStore, be, from_ms, now_ms};
use crate::domain::ledger::{Account, AccountBalance, LedgerTxn, Posting, TxnKind, TxnParts};
use crate::domain::{MerchantId, Order, OrderId};
use crate::storage::{
    AuditOrder, BatchOutcome, BookedTxn, LastEvent, LedgerScan, LedgerStore, RawPosting, StoreError,
};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;

/// A ledger transaction encoded for the writer (on the caller's thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnRow {
    txn_id: String,
    order_id: String,
    merchant_id: String,
    event_id: String,
    kind: &'static str,
    resolves: Option<String>,
    reference: Option<String>,
    postings: Vec<PostingRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PostingRow {
    account: String,
    /// The merchant owning the account, for merchant accounts.
    merchant: Option<String>,
    currency: String,
    amount: i64,
}

impl TxnRow {
    fn encode(t: &LedgerTxn) -> Self {
        Self {
            txn_id: t.id().to_string(),
            order_id: t.order_id().to_string(),
            merchant_id: t.merchant_id().to_string(),
            event_id: t.event_id().to_string(),
            kind: t.kind().as_str(),
            resolves: t.resolves().map(str::to_string),
            reference: t.reference().map(str::to_string),
            postings: t
                .postings()
                .iter()
                .map(|p| PostingRow {
                    account: p.account.to_string(),
                    merchant: p.account.merchant().map(str::to_string),
                    currency: p.currency.clone(),
                    amount: p.amount,
                })
                .collect(),
        }
    }
}

/// A ledger write, as the writer applies it.
#[derive(Debug)]
pub(crate) enum LedgerOp {
    Batch {
        rows: Vec<TxnRow>,
        cursor: String,
        seq: u64,
    },
}

/// What an account's snapshot moves by in one batch.
#[derive(Default)]
struct Delta {
    merchant: Option<String>,
    net: i64,
    inflow: i64,
    outflow: i64,
    last_txn: String,
}

fn overflow(what: &str) -> Refused {
    Refused::Answer(Err(StoreError::Backend(format!(
        "ledger arithmetic overflowed ({what})"
    ))))
}

/// Reads a stored transaction back as a row, to compare it with one being written again.
fn stored_row(conn: &Connection, txn_id: &str) -> rusqlite::Result<Option<TxnRow>> {
    let head = conn
        .prepare_cached(
            "SELECT order_id, merchant_id, event_id, kind, resolves, reference
             FROM ledger_transactions WHERE txn_id = ?1",
        )?
        .query_row([txn_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })
        .optional()?;
    let Some((order_id, merchant_id, event_id, kind, resolves, reference)) = head else {
        return Ok(None);
    };
    let postings = conn
        .prepare_cached(
            "SELECT account, currency, amount FROM ledger_postings WHERE txn_id = ?1 ORDER BY idx",
        )?
        .query_map([txn_id], |r| {
            let account: String = r.get(0)?;
            Ok(PostingRow {
                merchant: Account::parse(&account)
                    .ok()
                    .and_then(|a| a.merchant().map(str::to_string)),
                account,
                currency: r.get(1)?,
                amount: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(TxnRow {
        txn_id: txn_id.to_string(),
        order_id,
        merchant_id,
        event_id,
        // An unknown stored kind never equals a row being written.
        kind: TxnKind::parse(&kind).map_or("?", TxnKind::as_str),
        resolves,
        reference,
        postings,
    }))
}

/// Applies one ledger write inside the writer's transaction (its own savepoint: a refusal rolls
/// back everything it wrote).
pub(crate) fn apply(conn: &Connection, op: &LedgerOp) -> Result<WriteOk, Refused> {
    let LedgerOp::Batch { rows, cursor, seq } = op;
    let created_ms = now_ms();
    let mut outcome = BatchOutcome::default();
    let mut deltas: BTreeMap<(&str, &str), Delta> = BTreeMap::new();
    {
        let mut insert_txn = conn
            .prepare_cached(
                "INSERT INTO ledger_transactions (txn_id, order_id, merchant_id, event_id, kind,
                     resolves, reference, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (txn_id) DO NOTHING",
            )
            .map_err(backend)?;
        let mut insert_posting = conn
            .prepare_cached(
                "INSERT INTO ledger_postings (txn_id, idx, account, currency, amount)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(backend)?;
        for row in rows {
            let inserted = insert_txn
                .execute(params![
                    row.txn_id,
                    row.order_id,
                    row.merchant_id,
                    row.event_id,
                    row.kind,
                    row.resolves,
                    row.reference,
                    created_ms
                ])
                .map_err(backend)?;
            if inserted == 0 {
                // Stored already: a replay must be identical, else the whole batch is refused.
                if stored_row(conn, &row.txn_id).map_err(backend)?.as_ref() != Some(row) {
                    return Err(Refused::Answer(Err(StoreError::IdConflict(
                        row.txn_id.clone(),
                    ))));
                }
                outcome.skipped += 1;
                continue;
            }
            for (idx, p) in row.postings.iter().enumerate() {
                insert_posting
                    .execute(params![
                        row.txn_id, idx as i64, p.account, p.currency, p.amount
                    ])
                    .map_err(backend)?;
                let d = deltas
                    .entry((p.account.as_str(), p.currency.as_str()))
                    .or_default();
                d.merchant.clone_from(&p.merchant);
                d.net = d
                    .net
                    .checked_add(p.amount)
                    .ok_or_else(|| overflow(&p.account))?;
                let (inflow, outflow) = if p.amount > 0 {
                    (p.amount, 0)
                } else {
                    (
                        0,
                        p.amount.checked_neg().ok_or_else(|| overflow(&p.account))?,
                    )
                };
                d.inflow = d
                    .inflow
                    .checked_add(inflow)
                    .ok_or_else(|| overflow(&p.account))?;
                d.outflow = d
                    .outflow
                    .checked_add(outflow)
                    .ok_or_else(|| overflow(&p.account))?;
                d.last_txn.clone_from(&row.txn_id);
            }
            outcome.written += 1;
            outcome.postings += row.postings.len();
        }
    }
    let mut read = conn
        .prepare_cached(
            "SELECT balance, inflow, outflow FROM ledger_balances WHERE account = ?1 AND currency = ?2",
        )
        .map_err(backend)?;
    let mut write = conn
        .prepare_cached(
            "INSERT INTO ledger_balances (account, currency, merchant_id, balance, inflow, outflow,
                 last_txn_id, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (account, currency) DO UPDATE SET balance = excluded.balance,
                 inflow = excluded.inflow, outflow = excluded.outflow,
                 last_txn_id = excluded.last_txn_id, updated_ms = excluded.updated_ms",
        )
        .map_err(backend)?;
    for ((account, currency), d) in &deltas {
        let (balance, inflow, outflow): (i64, i64, i64) = read
            .query_row([account, currency], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(backend)?
            .unwrap_or((0, 0, 0));
        let add = |a: i64, b: i64| a.checked_add(b).ok_or_else(|| overflow(account));
        write
            .execute(params![
                account,
                currency,
                d.merchant,
                add(balance, d.net)?,
                add(inflow, d.inflow)?,
                add(outflow, d.outflow)?,
                d.last_txn,
                created_ms
            ])
            .map_err(backend)?;
    }
    super::writer::set_cursor(conn, cursor, *seq)?;
    Ok(WriteOk::Ledger(outcome))
}

/// The rows of one transaction, as selected by `TXN_COLUMNS` joined with its postings.
type Head = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
);

fn decode_txn(head: Head, postings: Vec<(String, String, i64)>) -> Result<BookedTxn, StoreError> {
    let (txn_id, order_id, merchant_id, event_id, kind, resolves, reference, created_ms) = head;
    let corrupt = |why: String| StoreError::Corrupt(format!("ledger transaction {txn_id}: {why}"));
    let kind = TxnKind::parse(&kind).ok_or_else(|| corrupt(format!("kind {kind:?}")))?;
    let postings = postings
        .into_iter()
        .map(|(account, currency, amount)| {
            let account = Account::parse(&account).map_err(|e| corrupt(e.to_string()))?;
            Ok(Posting::new(account, &currency, amount))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let txn = LedgerTxn::new(TxnParts {
        id: txn_id.clone(),
        order_id,
        merchant_id,
        event_id,
        kind,
        resolves,
        reference,
        postings,
    })
    .map_err(|e| corrupt(e.to_string()))?;
    Ok(BookedTxn {
        txn,
        created_at: from_ms(created_ms),
    })
}

/// An order's transactions, decoded and checked, by id (which sorts in the order booked).
fn order_txns(c: &Connection, order_id: &str) -> Result<Vec<BookedTxn>, StoreError> {
    let heads: Vec<Head> = c
        .prepare_cached(
            "SELECT txn_id, order_id, merchant_id, event_id, kind, resolves, reference, created_ms
             FROM ledger_transactions INDEXED BY ledger_transactions_order
             WHERE order_id = ?1 ORDER BY txn_id",
        )
        .and_then(|mut s| {
            s.query_map([order_id], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })?
            .collect()
        })
        .map_err(be)?;
    let mut postings = c
        .prepare_cached(
            "SELECT account, currency, amount FROM ledger_postings WHERE txn_id = ?1 ORDER BY idx",
        )
        .map_err(be)?;
    heads
        .into_iter()
        .map(|h| {
            let legs = postings
                .query_map([&h.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(be)?;
            decode_txn(h, legs)
        })
        .collect()
}

impl SqliteStore {
    async fn ledger_write(&self, op: LedgerOp) -> Result<BatchOutcome, StoreError> {
        match self.write(WriteOp::Ledger(op)).await? {
            WriteOk::Ledger(outcome) => Ok(outcome),
            other => Err(StoreError::Backend(format!(
                "unexpected writer answer {other:?}"
            ))),
        }
    }
}

#[async_trait]
impl LedgerStore for SqliteStore {
    async fn write_batch(
        &self,
        txns: Vec<LedgerTxn>,
        cursor_name: &str,
        partition: u32,
        cursor_seq: u64,
    ) -> Result<BatchOutcome, StoreError> {
        super::one_partition(partition)?;
        let rows = txns.iter().map(TxnRow::encode).collect();
        self.ledger_write(LedgerOp::Batch {
            rows,
            cursor: cursor_name.to_string(),
            seq: cursor_seq,
        })
        .await
    }

    async fn transactions_for_orders(
        &self,
        order_ids: Vec<String>,
    ) -> Result<BTreeMap<String, Vec<LedgerTxn>>, StoreError> {
        let ids = serde_json::to_string(&order_ids)
            .map_err(|e| StoreError::Backend(format!("order ids: {e}")))?;
        self.read(move |c| {
            // One statement for the whole batch of orders (the consumer asks for up to
            // `ledger.batch`), each order by its index: a query per order cost 50 µs each.
            let mut stmt = c
                .prepare_cached(
                    "SELECT t.txn_id, t.order_id, t.merchant_id, t.event_id, t.kind, t.resolves,
                            t.reference, t.created_ms, p.account, p.currency, p.amount
                     FROM json_each(?1) j
                     JOIN ledger_transactions t INDEXED BY ledger_transactions_order
                          ON t.order_id = j.value
                     LEFT JOIN ledger_postings p ON p.txn_id = t.txn_id
                     ORDER BY t.order_id, t.txn_id, p.idx",
                )
                .map_err(be)?;
            let mut rows = stmt.query([&ids]).map_err(be)?;
            let mut out: BTreeMap<String, Vec<LedgerTxn>> =
                order_ids.into_iter().map(|id| (id, Vec::new())).collect();
            let mut current: Option<(Head, Vec<(String, String, i64)>)> = None;
            let finish = |cur: Option<(Head, Vec<(String, String, i64)>)>,
                          out: &mut BTreeMap<String, Vec<LedgerTxn>>|
             -> Result<(), StoreError> {
                if let Some((head, legs)) = cur {
                    let order = head.1.clone();
                    let booked = decode_txn(head, legs)?;
                    out.entry(order).or_default().push(booked.txn);
                }
                Ok(())
            };
            while let Some(r) = rows.next().map_err(be)? {
                let txn_id: String = r.get(0).map_err(be)?;
                if current.as_ref().is_none_or(|(h, _)| h.0 != txn_id) {
                    finish(current.take(), &mut out)?;
                    let head: Head = (
                        txn_id,
                        r.get(1).map_err(be)?,
                        r.get(2).map_err(be)?,
                        r.get(3).map_err(be)?,
                        r.get(4).map_err(be)?,
                        r.get(5).map_err(be)?,
                        r.get(6).map_err(be)?,
                        r.get(7).map_err(be)?,
                    );
                    current = Some((head, Vec::new()));
                }
                // A transaction without postings comes with NULLs and is refused as it decodes.
                let leg: (Option<String>, Option<String>, Option<i64>) = (
                    r.get(8).map_err(be)?,
                    r.get(9).map_err(be)?,
                    r.get(10).map_err(be)?,
                );
                if let (Some((_, legs)), (Some(a), Some(c), Some(n))) = (current.as_mut(), leg) {
                    legs.push((a, c, n));
                }
            }
            finish(current.take(), &mut out)?;
            Ok(out)
        })
        .await
    }

    async fn order_ledger(&self, order_id: &OrderId) -> Result<Vec<BookedTxn>, StoreError> {
        let id = order_id.to_string();
        self.read(move |c| order_txns(c, &id)).await
    }

    async fn merchant_balances(
        &self,
        merchant: &MerchantId,
    ) -> Result<Vec<AccountBalance>, StoreError> {
        let merchant = merchant.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT account, currency, balance, inflow, outflow FROM ledger_balances
                     INDEXED BY ledger_balances_merchant
                     WHERE merchant_id = ?1 ORDER BY account, currency",
                )
                .map_err(be)?;
            let rows = stmt
                .query_map([&merchant], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .map_err(be)?;
            let mut out = Vec::new();
            for row in rows {
                let (account, currency, balance, inflow, outflow) = row.map_err(be)?;
                let account = Account::parse(&account)
                    .map_err(|e| StoreError::Corrupt(format!("ledger balance: {e}")))?;
                out.push(AccountBalance {
                    account,
                    currency,
                    balance,
                    inflow,
                    outflow,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn scan_ledger(&self, max_findings: usize) -> Result<LedgerScan, StoreError> {
        self.read(move |c| super::ledger_scan::scan(c, max_findings))
            .await
    }

    async fn audit_orders(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<AuditOrder>, StoreError> {
        let after = after.unwrap_or_default();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT o.body, (SELECT MAX(e.seq) FROM events e INDEXED BY events_order
                                     WHERE e.order_id = o.order_id)
                     FROM orders o WHERE o.order_id > ?1 ORDER BY o.order_id LIMIT ?2",
                )
                .map_err(be)?;
            let rows = stmt
                .query_map(params![after, limit as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
                })
                .map_err(be)?;
            let mut out = Vec::new();
            for row in rows {
                let (body, seq) = row.map_err(be)?;
                let order: Order = serde_json::from_str(&body)
                    .map_err(|e| StoreError::Corrupt(format!("order body: {e}")))?;
                out.push(AuditOrder {
                    order,
                    last_event: seq.map_or(LastEvent::Purged, |s| {
                        LastEvent::At(crate::storage::Position {
                            partition: 0,
                            seq: s as u64,
                        })
                    }),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn raw_postings_for_orders(
        &self,
        order_ids: Vec<String>,
    ) -> Result<BTreeMap<String, Vec<RawPosting>>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT t.txn_id, t.kind, p.account, p.currency, p.amount
                     FROM ledger_transactions t INDEXED BY ledger_transactions_order
                     JOIN ledger_postings p ON p.txn_id = t.txn_id
                     WHERE t.order_id = ?1 ORDER BY t.txn_id, p.idx",
                )
                .map_err(be)?;
            let mut out = BTreeMap::new();
            for id in order_ids {
                let rows = stmt
                    .query_map([&id], |r| {
                        Ok(RawPosting {
                            txn_id: r.get(0)?,
                            kind: r.get(1)?,
                            account: r.get(2)?,
                            currency: r.get(3)?,
                            amount: r.get(4)?,
                        })
                    })
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(be)?;
                out.insert(id, rows);
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
