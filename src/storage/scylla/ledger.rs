//! The CQL ledger (migration 2): `LedgerStore` for `ScyllaStore`, same semantics as the SQLite
//! ledger, without counters, without updating or deleting a posting.
//!
//! **Tables.**
//! - `ledger_txns`, partitioned by order id (everything an order has is keyed by its order id):
//!   one clustering row per transaction head (`idx = -1`: merchant, event, kind, resolves,
//!   reference, when stored, how many postings) and one per posting (`idx` 0..n). A transaction
//!   is written as one single-partition batch (atomic and isolated), so it is never seen half
//!   written. Transaction ids sort in the order booked, so reading the partition answers an
//!   order's ledger in order. Ids are unique per order (they derive from the order's event ids).
//! - `ledger_accounts`, partitioned by (holder, log partition), the holder being the merchant of
//!   a merchant account (`m:<merchant>`) or the account itself (`a:<account>`): the per-account
//!   views, derived and replayable. Rows `p:<txn id>`/idx copy the postings applied (the
//!   account's statement), rows `b:<account>/<currency>` are the balance snapshots (balance,
//!   inflow, outflow as absolute values, and the log position of the batch that last moved
//!   them). Only the ledger consumer of that log partition writes the partition, so the
//!   consumers of different log partitions never race on a snapshot; merchant balances sum a
//!   merchant's snapshot rows over the log partitions.
//!
//! **A batch** (`write_batch` for log partition `p` up to `seq`):
//! 1. the stored transactions of the batch's orders are read: one with the same id and the same
//!    content is skipped; one with other content (or a conflict inside the batch) is
//!    `IdConflict`, and nothing is written, cursor included;
//! 2. each new transaction is written as one single-partition batch (plain, idempotent: a
//!    replay writes the same cells);
//! 3. per holder, the `p:` rows of the batch's transactions (new *and* skipped ones) are read:
//!    a transaction with its `p:` rows is applied already; the others get their `p:` rows and
//!    the new absolute snapshots in one single-partition batch per chunk. So a snapshot moves by
//!    a transaction exactly once, even when a crash fell between step 2 and step 3 (the replayed
//!    transaction is skipped in step 1 and still applied in step 3), and a batch replayed after
//!    a crash in step 3 or 4 changes nothing;
//! 4. the cursor moves (the log's LWT `IF seq < ?`: it never moves back).
//!
//! Statements per batch: one read per order of the batch, one plain batch per new
//! transaction, per holder touched one read of its `p:` rows (per 100 transactions), and when
//! something is to apply one read of its snapshots and one plain batch per 64 view rows; then
//! the cursor's LWT. No LWT besides the cursor's: the consumer of a log partition is the only
//! writer of its rows, and every write is an idempotent insert of the same cells.
//!
//! **Limits.** The `ledger_accounts` partition of a channel account (`a:channel_pending:<ch>`,
//! `a:channel_clearing:<ch>`) gets a view row per posting of every order of its log partition,
//! without bound; bucketing the `p:` rows by month (a new migration) is the next step before
//! large volumes. Transaction ids are checked for conflicts within their order (where the
//! domain derives them, from the order's event ids), not across orders.
//!
//! **Reads.** An order's ledger is one partition read (at most `ORDER_ROWS` rows; more is an
//! error, not a silent cut). `scan_ledger` pages through `ledger_txns` in token order
//! (`SCAN_PAGE` rows a page): the checks of each transaction's rows, and the resolution checks
//! per order (a post or void resolves a hold of its own order, so a resolution naming another
//! order's hold is `bad_resolution`, and `resolved_twice` counts resolutions within the order).
//! Then it pages through `ledger_accounts` in token order (partitions come whole): per
//! partition, each snapshot is compared with the sum of the postings *applied* in that
//! partition (its `p:` rows, written in the same single-partition batch as the snapshot), so a
//! snapshot without its postings, or postings without their snapshot, is `balance_drift`; and
//! each transaction's `p:` rows are checked against its stored rows (one order read per
//! transaction, `APPLIED_CHUNK` transactions at a time): a view row of no stored transaction is
//! `orphan_posting`, one that differs from its posting (or lies in another holder, or misses one
//! of the transaction's postings of that holder) is `bad_row`. A stored transaction with no
//! `p:` rows, or with them in some of its holders only, is no finding: it is a batch a crash
//! stopped between steps 2 and 3 (or within step 3), whose cursor has not moved, and which
//! the replay books. The scan is no snapshot, as SQLite's read transaction is: a page of a
//! partition read while a batch writes it may show as `balance_drift`; a second scan tells a
//! passing one from a lasting one. A snapshot is checked against its own partition only (the
//! merchant's balance sums those), and one of a partition with no `p:` row is found too.
//!
//! `audit_orders` pages the orders in **token order** of the `orders` table, not id order (CQL
//! has no id order across partitions); `after` is still the last order id of the previous
//! page. Its `last_event` names only the order's log partition: the CQL log is not indexed by
//! order (`ledger verify` then judges the lag by time, see `actors::ledger_verify`).

use super::{ScyllaStore, be, from_ms, now_ms};
use crate::domain::ledger::{
    Account, AccountBalance, LedgerTxn, Posting, TxnKind, TxnParts, check_currency,
};
use crate::domain::{MerchantId, Order, OrderId};
use crate::storage::{
    AuditOrder, BatchOutcome, BookedTxn, EventLog, Finding, LastEvent, LedgerScan, LedgerStore,
    RawPosting, StoreError,
};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::SerialConsistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlValue};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Most rows one read of an order's ledger answers; an order with more is an error.
const ORDER_ROWS: i32 = 4_096;
/// Reads of different partitions in flight at once.
const READS_IN_FLIGHT: usize = 16;
/// Rows per page of the whole-ledger scan, and of the orders' scan.
const SCAN_PAGE: i32 = 1_000;
/// Most view rows in one snapshot batch (kept well under the servers' batch size limits).
const VIEW_ROWS_PER_BATCH: usize = 64;
/// Most balance rows one holder's read answers (accounts × currencies × ...).
const BALANCE_ROWS: i32 = 1_000;
/// The clustering `idx` of a transaction's head row.
const HEAD: i32 = -1;

/// The migration's statements (`{ks}` is the keyspace).
pub(super) const DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS {ks}.ledger_txns (
        order_id    text,
        txn_id      text,
        idx         int,
        merchant_id text,
        event_id    text,
        kind        text,
        resolves    text,
        reference   text,
        created_at  timestamp,
        postings    int,
        account     text,
        currency    text,
        amount      bigint,
        PRIMARY KEY (order_id, txn_id, idx)
    ) WITH CLUSTERING ORDER BY (txn_id ASC, idx ASC)",
    "CREATE TABLE IF NOT EXISTS {ks}.ledger_accounts (
        holder     text,
        partition  int,
        item       text,
        idx        int,
        account    text,
        currency   text,
        amount     bigint,
        order_id   text,
        balance    bigint,
        inflow     bigint,
        outflow    bigint,
        seq        bigint,
        updated_at timestamp,
        PRIMARY KEY ((holder, partition), item, idx)
    ) WITH CLUSTERING ORDER BY (item ASC, idx ASC)",
];

/// This module's prepared statements.
pub(super) struct Statements {
    insert_head: PreparedStatement,
    insert_posting: PreparedStatement,
    order_rows: PreparedStatement,
    scan_rows: PreparedStatement,
    scan_views: PreparedStatement,
    balances: PreparedStatement,
    applied: PreparedStatement,
    insert_view: PreparedStatement,
    set_balance: PreparedStatement,
    audit_first: PreparedStatement,
    audit_after: PreparedStatement,
}

/// The columns of `ledger_txns` every read selects.
const TXN_COLUMNS: &str = "order_id, txn_id, idx, merchant_id, event_id, kind, resolves, \
                           reference, created_at, postings, account, currency, amount";

impl Statements {
    pub(super) async fn prepare(
        session: &Session,
        _serial: SerialConsistency,
    ) -> Result<Self, StoreError> {
        // Plain writes and reads only (the cursor's LWT is the log's): all idempotent.
        let p = |cql: String| async move {
            Ok::<_, StoreError>(super::plain(session.prepare(cql).await.map_err(be)?))
        };
        let mut scan_rows = p(format!("SELECT {TXN_COLUMNS} FROM ledger_txns")).await?;
        scan_rows.set_page_size(SCAN_PAGE);
        let mut scan_views = p(
            "SELECT holder, partition, item, idx, account, currency, amount, \
             order_id, balance, inflow, outflow FROM ledger_accounts"
                .into(),
        )
        .await?;
        scan_views.set_page_size(SCAN_PAGE);
        Ok(Self {
            insert_head: p(
                "INSERT INTO ledger_txns (order_id, txn_id, idx, merchant_id, \
                 event_id, kind, resolves, reference, created_at, postings) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    .into(),
            )
            .await?,
            insert_posting: p("INSERT INTO ledger_txns (order_id, txn_id, idx, account, \
                 currency, amount) VALUES (?, ?, ?, ?, ?, ?)"
                .into())
            .await?,
            order_rows: p(format!(
                "SELECT {TXN_COLUMNS} FROM ledger_txns WHERE order_id = ? LIMIT ?"
            ))
            .await?,
            scan_rows,
            scan_views,
            balances: p("SELECT account, currency, balance, inflow, outflow FROM \
                 ledger_accounts WHERE holder = ? AND partition = ? \
                 AND item >= 'b:' AND item < 'b;' LIMIT ?"
                .into())
            .await?,
            applied: p(
                "SELECT item FROM ledger_accounts WHERE holder = ? AND partition = ? \
                 AND item IN ?"
                    .into(),
            )
            .await?,
            insert_view: p(
                "INSERT INTO ledger_accounts (holder, partition, item, idx, \
                 account, currency, amount, order_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    .into(),
            )
            .await?,
            set_balance: p(
                "INSERT INTO ledger_accounts (holder, partition, item, idx, \
                 account, currency, balance, inflow, outflow, seq, updated_at) \
                 VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)"
                    .into(),
            )
            .await?,
            audit_first: p("SELECT DISTINCT order_id, body FROM orders LIMIT ?".into()).await?,
            audit_after: p("SELECT DISTINCT order_id, body FROM orders \
                 WHERE token(order_id) > token(?) LIMIT ?"
                .into())
            .await?,
        })
    }
}

/// One `ledger_txns` row as read.
type TxnRow = (
    String,
    String,
    i32,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<CqlTimestamp>,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// A transaction's head row as stored.
#[derive(Debug, Clone, Default)]
struct Head {
    merchant_id: Option<String>,
    event_id: Option<String>,
    kind: Option<String>,
    resolves: Option<String>,
    reference: Option<String>,
    created_ms: Option<i64>,
    postings: Option<i32>,
}

/// A posting row as stored.
#[derive(Debug, Clone)]
struct Leg {
    idx: i32,
    account: Option<String>,
    currency: Option<String>,
    amount: Option<i64>,
}

/// A transaction's rows as stored (unchecked).
#[derive(Debug, Clone)]
struct Stored {
    order_id: String,
    txn_id: String,
    head: Option<Head>,
    legs: Vec<Leg>,
}

/// What two writes of one transaction id must agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Content {
    merchant_id: String,
    event_id: String,
    kind: String,
    resolves: Option<String>,
    reference: Option<String>,
    postings: Vec<(String, String, i64)>,
}

fn content_of(t: &LedgerTxn) -> Content {
    Content {
        merchant_id: t.merchant_id().to_string(),
        event_id: t.event_id().to_string(),
        kind: t.kind().as_str().to_string(),
        resolves: t.resolves().map(str::to_string),
        reference: t.reference().map(str::to_string),
        postings: t
            .postings()
            .iter()
            .map(|p| (p.account.to_string(), p.currency.clone(), p.amount))
            .collect(),
    }
}

/// Folds rows (in clustering order) into transactions.
fn push_row(out: &mut Vec<Stored>, row: TxnRow) {
    let (order_id, txn_id, idx, merchant_id, event_id, kind, resolves, reference, created, n) = (
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9,
    );
    let (account, currency, amount) = (row.10, row.11, row.12);
    let same = out
        .last()
        .is_some_and(|s| s.order_id == order_id && s.txn_id == txn_id);
    if !same {
        out.push(Stored {
            order_id,
            txn_id,
            head: None,
            legs: Vec::new(),
        });
    }
    let Some(s) = out.last_mut() else { return };
    if idx == HEAD {
        s.head = Some(Head {
            merchant_id,
            event_id,
            kind,
            resolves,
            reference,
            created_ms: created.map(|t| t.0),
            postings: n,
        });
    } else {
        s.legs.push(Leg {
            idx,
            account,
            currency,
            amount,
        });
    }
}

impl Stored {
    /// Its content, when every row is whole.
    fn content(&self) -> Option<Content> {
        let h = self.head.as_ref()?;
        if h.postings != i32::try_from(self.legs.len()).ok() {
            return None;
        }
        let postings = self
            .legs
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (l.idx == i32::try_from(i).ok()?).then_some(())?;
                Some((l.account.clone()?, l.currency.clone()?, l.amount?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Content {
            merchant_id: h.merchant_id.clone()?,
            event_id: h.event_id.clone()?,
            kind: h.kind.clone()?,
            resolves: h.resolves.clone(),
            reference: h.reference.clone(),
            postings,
        })
    }

    /// Decoded and checked.
    fn decode(&self) -> Result<BookedTxn, StoreError> {
        let corrupt =
            |why: String| StoreError::Corrupt(format!("ledger transaction {}: {why}", self.txn_id));
        let c = self
            .content()
            .ok_or_else(|| corrupt("rows missing or incomplete".into()))?;
        let kind = TxnKind::parse(&c.kind).ok_or_else(|| corrupt(format!("kind {:?}", c.kind)))?;
        let postings = c
            .postings
            .iter()
            .map(|(account, currency, amount)| {
                let account = Account::parse(account).map_err(|e| corrupt(e.to_string()))?;
                Ok(Posting::new(account, currency, *amount))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let txn = LedgerTxn::new(TxnParts {
            id: self.txn_id.clone(),
            order_id: self.order_id.clone(),
            merchant_id: c.merchant_id,
            event_id: c.event_id,
            kind,
            resolves: c.resolves,
            reference: c.reference,
            postings,
        })
        .map_err(|e| corrupt(e.to_string()))?;
        let created_ms = self.head.as_ref().and_then(|h| h.created_ms).unwrap_or(0);
        Ok(BookedTxn {
            txn,
            created_at: from_ms(created_ms),
        })
    }
}

/// The partition of `ledger_accounts` an account's views live in (with the log partition).
fn holder(a: &Account) -> String {
    match a.merchant() {
        Some(m) => format!("m:{m}"),
        None => format!("a:{a}"),
    }
}

fn applied_item(txn_id: &str) -> String {
    format!("p:{txn_id}")
}

fn balance_item(account: &str, currency: &str) -> String {
    format!("b:{account}/{currency}")
}

fn overflow(what: &str) -> StoreError {
    StoreError::Backend(format!("ledger arithmetic overflowed ({what})"))
}

/// (balance, inflow, outflow).
type Sums = (i64, i64, i64);

fn add_posting(s: &mut Sums, amount: i64, what: &str) -> Result<(), StoreError> {
    s.0 = s.0.checked_add(amount).ok_or_else(|| overflow(what))?;
    if amount > 0 {
        s.1 = s.1.checked_add(amount).ok_or_else(|| overflow(what))?;
    } else {
        let out = amount.checked_neg().ok_or_else(|| overflow(what))?;
        s.2 = s.2.checked_add(out).ok_or_else(|| overflow(what))?;
    }
    Ok(())
}

fn add_sums(a: &mut Sums, b: Sums, what: &str) -> Result<(), StoreError> {
    a.0 = a.0.checked_add(b.0).ok_or_else(|| overflow(what))?;
    a.1 = a.1.checked_add(b.1).ok_or_else(|| overflow(what))?;
    a.2 = a.2.checked_add(b.2).ok_or_else(|| overflow(what))?;
    Ok(())
}

fn text(s: &str) -> Option<CqlValue> {
    Some(CqlValue::Text(s.to_string()))
}

impl ScyllaStore {
    /// One page of a paged statement.
    async fn ledger_page(
        &self,
        st: &PreparedStatement,
        state: PagingState,
    ) -> Result<
        (
            scylla::response::query_result::QueryResult,
            PagingStateResponse,
        ),
        StoreError,
    > {
        self.open_for_work()?;
        self.count(true);
        self.session
            .execute_single_page(st, (), state)
            .await
            .map_err(be)
    }

    /// An order's ledger rows, grouped by transaction (in id order).
    async fn stored_of_order(&self, order_id: &str) -> Result<Vec<Stored>, StoreError> {
        let rows = self
            .exec(&self.ledger_st.order_rows, (order_id, ORDER_ROWS))
            .await?
            .into_rows_result()
            .map_err(be)?;
        if rows.rows_num() >= ORDER_ROWS as usize {
            return Err(StoreError::Backend(format!(
                "the ledger of order {order_id} has {ORDER_ROWS} rows or more"
            )));
        }
        let mut out = Vec::new();
        for row in rows.rows::<TxnRow>().map_err(be)? {
            push_row(&mut out, row.map_err(be)?);
        }
        Ok(out)
    }

    /// Several orders' ledgers (a bounded number of reads in flight).
    async fn stored_of_orders(
        &self,
        order_ids: Vec<String>,
    ) -> Result<BTreeMap<String, Vec<Stored>>, StoreError> {
        futures::stream::iter(order_ids)
            .map(|id| async move {
                let stored = self.stored_of_order(&id).await?;
                Ok::<_, StoreError>((id, stored))
            })
            .buffer_unordered(READS_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Writes one transaction: its head and postings, one single-partition batch.
    pub(super) async fn insert_txn(
        &self,
        t: &LedgerTxn,
        created_ms: i64,
    ) -> Result<(), StoreError> {
        let st = &self.ledger_st;
        let mut batch = Batch::new(BatchType::Unlogged);
        batch.set_is_idempotent(true);
        let opt = |s: Option<&str>| s.map(|s| CqlValue::Text(s.to_string()));
        batch.append_statement(st.insert_head.clone());
        let mut values: Vec<Vec<Option<CqlValue>>> = vec![vec![
            text(t.order_id()),
            text(t.id()),
            Some(CqlValue::Int(HEAD)),
            text(t.merchant_id()),
            text(t.event_id()),
            text(t.kind().as_str()),
            opt(t.resolves()),
            opt(t.reference()),
            Some(CqlValue::Timestamp(CqlTimestamp(created_ms))),
            Some(CqlValue::Int(t.postings().len() as i32)),
        ]];
        for (idx, p) in t.postings().iter().enumerate() {
            batch.append_statement(st.insert_posting.clone());
            values.push(vec![
                text(t.order_id()),
                text(t.id()),
                Some(CqlValue::Int(idx as i32)),
                text(&p.account.to_string()),
                text(&p.currency),
                Some(CqlValue::BigInt(p.amount)),
            ]);
        }
        self.exec_batch(&batch, values).await?;
        Ok(())
    }

    /// A holder's snapshot rows in one log partition, by (account, currency).
    async fn holder_balances(
        &self,
        holder: &str,
        partition: u32,
    ) -> Result<BTreeMap<(String, String), Sums>, StoreError> {
        let rows = self
            .exec(
                &self.ledger_st.balances,
                (holder, partition as i32, BALANCE_ROWS),
            )
            .await?
            .into_rows_result()
            .map_err(be)?;
        let mut out = BTreeMap::new();
        type Row = (
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        );
        for row in rows.rows::<Row>().map_err(be)? {
            let (account, currency, balance, inflow, outflow) = row.map_err(be)?;
            let (Some(account), Some(currency)) = (account, currency) else {
                return Err(StoreError::Corrupt(format!(
                    "ledger balance row of {holder} without its account"
                )));
            };
            out.insert(
                (account, currency),
                (
                    balance.unwrap_or(0),
                    inflow.unwrap_or(0),
                    outflow.unwrap_or(0),
                ),
            );
        }
        Ok(out)
    }

    /// Which of `txns` (ids) a holder's views in `partition` hold already.
    async fn applied_txns(
        &self,
        holder: &str,
        partition: u32,
        txn_ids: &[&str],
    ) -> Result<HashSet<String>, StoreError> {
        let mut out = HashSet::new();
        for chunk in txn_ids.chunks(super::MAX_IN_KEYS) {
            let items: Vec<String> = chunk.iter().map(|id| applied_item(id)).collect();
            let rows = self
                .exec(&self.ledger_st.applied, (holder, partition as i32, items))
                .await?
                .into_rows_result()
                .map_err(be)?;
            for row in rows.rows::<(String,)>().map_err(be)? {
                let (item,) = row.map_err(be)?;
                if let Some(id) = item.strip_prefix("p:") {
                    out.insert(id.to_string());
                }
            }
        }
        Ok(out)
    }

    /// The scan's check of applied postings: every view row is a posting of its stored
    /// transaction, in that posting's holder, and a transaction applied in a holder has all its
    /// postings of that holder applied (they are written in one batch). One read per order.
    async fn check_applied(
        &self,
        f: &mut Findings,
        applied: Vec<Applied>,
    ) -> Result<(), StoreError> {
        if applied.is_empty() {
            return Ok(());
        }
        let orders: BTreeSet<String> = applied.iter().filter_map(|a| a.order_id.clone()).collect();
        let stored = self.stored_of_orders(orders.into_iter().collect()).await?;
        for a in &applied {
            let found = a.order_id.as_ref().and_then(|o| {
                stored
                    .get(o)?
                    .iter()
                    .find(|s| s.txn_id == a.txn_id && s.head.is_some())
            });
            let Some(s) = found else {
                for (idx, ..) in &a.rows {
                    f.push(
                        "orphan_posting",
                        format!(
                            "view row p:{}/{idx} of {} (partition {}) has no transaction \
                             (order {:?})",
                            a.txn_id, a.holder, a.partition, a.order_id
                        ),
                    );
                }
                continue;
            };
            let mut seen: BTreeSet<i32> = BTreeSet::new();
            for (idx, account, currency, amount) in &a.rows {
                seen.insert(*idx);
                let leg = s.legs.iter().find(|l| l.idx == *idx);
                let same = leg.is_some_and(|l| {
                    l.account == *account && l.currency == *currency && l.amount == *amount
                });
                let here = account
                    .as_deref()
                    .and_then(|a| Account::parse(a).ok())
                    .is_some_and(|acc| holder(&acc) == a.holder);
                if !same || !here {
                    f.push(
                        "bad_row",
                        format!(
                            "view row p:{}/{idx} of {} (partition {}) is ({account:?}, \
                             {currency:?}, {amount:?}), its posting {:?}",
                            a.txn_id,
                            a.holder,
                            a.partition,
                            leg.map(|l| (&l.account, &l.currency, l.amount))
                        ),
                    );
                }
            }
            for l in &s.legs {
                let mine = l
                    .account
                    .as_deref()
                    .and_then(|acc| Account::parse(acc).ok())
                    .is_some_and(|acc| holder(&acc) == a.holder);
                if mine && !seen.contains(&l.idx) {
                    f.push(
                        "bad_row",
                        format!(
                            "transaction {} is applied in {} (partition {}) without its \
                             posting {}",
                            a.txn_id, a.holder, a.partition, l.idx
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Step 3 for one holder: the transactions not applied yet get their view rows and move
    /// the snapshots (absolute values), a single-partition batch per chunk.
    pub(super) async fn apply_to_holder(
        &self,
        holder: &str,
        partition: u32,
        seq: u64,
        txns: &[&LedgerTxn],
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = txns.iter().map(|t| t.id()).collect();
        let applied = self.applied_txns(holder, partition, &ids).await?;
        let todo: Vec<&LedgerTxn> = txns
            .iter()
            .copied()
            .filter(|t| !applied.contains(t.id()))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let mut balances = self.holder_balances(holder, partition).await?;
        let st = &self.ledger_st;
        let now = now_ms();
        let mut i = 0;
        while i < todo.len() {
            let mut batch = Batch::new(BatchType::Unlogged);
            batch.set_is_idempotent(true);
            let mut values: Vec<Vec<Option<CqlValue>>> = Vec::new();
            let mut touched: BTreeSet<(String, String)> = BTreeSet::new();
            while i < todo.len() && values.len() < VIEW_ROWS_PER_BATCH {
                let t = todo[i];
                i += 1;
                for (idx, p) in t.postings().iter().enumerate() {
                    if self::holder(&p.account) != holder {
                        continue;
                    }
                    let account = p.account.to_string();
                    batch.append_statement(st.insert_view.clone());
                    values.push(vec![
                        text(holder),
                        Some(CqlValue::Int(partition as i32)),
                        text(&applied_item(t.id())),
                        Some(CqlValue::Int(idx as i32)),
                        text(&account),
                        text(&p.currency),
                        Some(CqlValue::BigInt(p.amount)),
                        text(t.order_id()),
                    ]);
                    let key = (account, p.currency.clone());
                    add_posting(balances.entry(key.clone()).or_default(), p.amount, &key.0)?;
                    touched.insert(key);
                }
            }
            for key in touched {
                let (balance, inflow, outflow) = balances[&key];
                batch.append_statement(st.set_balance.clone());
                values.push(vec![
                    text(holder),
                    Some(CqlValue::Int(partition as i32)),
                    text(&balance_item(&key.0, &key.1)),
                    text(&key.0),
                    text(&key.1),
                    Some(CqlValue::BigInt(balance)),
                    Some(CqlValue::BigInt(inflow)),
                    Some(CqlValue::BigInt(outflow)),
                    Some(CqlValue::BigInt(seq as i64)),
                    Some(CqlValue::Timestamp(CqlTimestamp(now))),
                ]);
            }
            if !values.is_empty() {
                self.exec_batch(&batch, values).await?;
            }
        }
        Ok(())
    }
}

/// Findings up to a bound.
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

/// What the whole-ledger scan keeps while it reads.
#[derive(Default)]
struct Scan {
    transactions: u64,
    postings: u64,
}

impl Scan {
    /// The checks of one transaction's rows.
    fn txn(&mut self, f: &mut Findings, s: &Stored) {
        if s.head.is_some() {
            self.transactions += 1;
        }
        self.postings += s.legs.len() as u64;
        let Some(h) = &s.head else {
            for l in &s.legs {
                f.push(
                    "orphan_posting",
                    format!(
                        "posting {} of transaction {} has no transaction",
                        l.idx, s.txn_id
                    ),
                );
            }
            return;
        };
        if s.legs.is_empty() {
            f.push(
                "empty_transaction",
                format!("transaction {} has no postings", s.txn_id),
            );
        }
        match h.kind.as_deref() {
            Some(k) if TxnKind::parse(k).is_some() => {}
            other => f.push(
                "bad_row",
                format!("transaction {}: unknown kind {other:?}", s.txn_id),
            ),
        }
        if h.merchant_id.is_none() || h.event_id.is_none() {
            f.push(
                "bad_row",
                format!("transaction {}: its head row is incomplete", s.txn_id),
            );
        }
        if h.postings != i32::try_from(s.legs.len()).ok() {
            f.push(
                "bad_row",
                format!(
                    "transaction {}: its head counts {:?} postings, {} are stored",
                    s.txn_id,
                    h.postings,
                    s.legs.len()
                ),
            );
        }
        let mut per_currency: BTreeMap<&str, i128> = BTreeMap::new();
        for l in &s.legs {
            let (Some(account), Some(currency), Some(amount)) = (&l.account, &l.currency, l.amount)
            else {
                f.push(
                    "bad_row",
                    format!(
                        "posting {} of transaction {} is incomplete",
                        l.idx, s.txn_id
                    ),
                );
                continue;
            };
            if let Err(e) = Account::parse(account) {
                f.push("bad_row", format!("transaction {}: {e}", s.txn_id));
            }
            if let Err(e) = check_currency(currency) {
                f.push("bad_row", format!("{account}: {e}"));
            }
            if amount == 0 {
                f.push(
                    "bad_row",
                    format!(
                        "posting {} of transaction {} has amount zero",
                        l.idx, s.txn_id
                    ),
                );
            }
            *per_currency.entry(currency.as_str()).or_insert(0) += i128::from(amount);
        }
        for (currency, sum) in per_currency {
            if sum != 0 {
                f.push(
                    "unbalanced",
                    format!(
                        "transaction {}: its {currency} postings sum to {sum}",
                        s.txn_id
                    ),
                );
            }
        }
    }

    /// The resolution checks of one order's transactions.
    fn order(&mut self, f: &mut Findings, txns: &[Stored]) {
        let kinds: HashMap<&str, Option<&str>> = txns
            .iter()
            .filter_map(|s| Some((s.txn_id.as_str(), s.head.as_ref()?.kind.as_deref())))
            .collect();
        let mut resolvers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for s in txns {
            let Some(h) = &s.head else { continue };
            let kind = h.kind.as_deref().unwrap_or("?");
            match h.resolves.as_deref() {
                Some(hold) => {
                    resolvers.entry(hold).or_default().push(&s.txn_id);
                    let is_hold = kinds.get(hold).copied().flatten() == Some("hold");
                    if !is_hold || !matches!(kind, "post" | "void") {
                        f.push(
                            "bad_resolution",
                            format!(
                                "{kind} {} resolves {hold:?}, which is not a hold of its order",
                                s.txn_id
                            ),
                        );
                    }
                }
                None if kind == "void" => f.push(
                    "bad_resolution",
                    format!(
                        "void {} resolves None, which is not a hold of its order",
                        s.txn_id
                    ),
                ),
                None => {}
            }
        }
        for (hold, by) in resolvers {
            if by.len() > 1 {
                f.push(
                    "resolved_twice",
                    format!(
                        "hold {hold} is resolved {} times ({})",
                        by.len(),
                        by.join(" ")
                    ),
                );
            }
        }
    }
}

/// One `ledger_accounts` row as the scan reads it: holder, partition, item, idx, account,
/// currency, amount, order id, balance, inflow, outflow.
type ViewRow = (
    String,
    i32,
    String,
    i32,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// A view row of an applied posting: idx, account, currency, amount.
type ViewLeg = (i32, Option<String>, Option<String>, Option<i64>);

/// The `p:` rows of one transaction in one `ledger_accounts` partition.
#[derive(Debug)]
struct Applied {
    holder: String,
    partition: i32,
    txn_id: String,
    order_id: Option<String>,
    rows: Vec<ViewLeg>,
}

/// What the scan of `ledger_accounts` keeps while it reads (partitions come whole).
#[derive(Default)]
struct Views {
    /// The partition being read: (holder, log partition).
    part: Option<(String, i32)>,
    /// Its snapshots, by (account, currency).
    snaps: BTreeMap<(String, String), Sums>,
    /// The sums of its applied postings, by (account, currency).
    applied: BTreeMap<(String, String), Sums>,
    /// Its accounts whose applied sums overflowed (reported once).
    overflowed: BTreeSet<(String, String)>,
    /// The transaction whose `p:` rows are being read.
    current: Option<Applied>,
    /// Transactions read, to check against their stored rows.
    pending: Vec<Applied>,
}

impl Views {
    fn row(&mut self, f: &mut Findings, row: ViewRow) {
        let (holder, partition, item, idx, account, currency, amount, order_id) =
            (row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7);
        let (balance, inflow, outflow) = (row.8, row.9, row.10);
        if self
            .part
            .as_ref()
            .is_none_or(|(h, p)| *h != holder || *p != partition)
        {
            self.finish_partition(f);
            self.part = Some((holder.clone(), partition));
        }
        if item.starts_with("b:") {
            let (Some(account), Some(currency)) = (account, currency) else {
                f.push(
                    "bad_row",
                    format!("balance row {item} of {holder} (partition {partition}) is incomplete"),
                );
                return;
            };
            self.snaps.insert(
                (account, currency),
                (
                    balance.unwrap_or(0),
                    inflow.unwrap_or(0),
                    outflow.unwrap_or(0),
                ),
            );
        } else if let Some(txn_id) = item.strip_prefix("p:") {
            if self.current.as_ref().is_some_and(|a| a.txn_id != txn_id) {
                self.pending.extend(self.current.take());
            }
            let a = self.current.get_or_insert_with(|| Applied {
                holder: holder.clone(),
                partition,
                txn_id: txn_id.to_string(),
                order_id: order_id.clone(),
                rows: Vec::new(),
            });
            if a.order_id != order_id {
                f.push(
                    "bad_row",
                    format!(
                        "the view rows of transaction {txn_id} in {holder} name orders {:?} \
                         and {order_id:?}",
                        a.order_id
                    ),
                );
            }
            a.rows
                .push((idx, account.clone(), currency.clone(), amount));
            let (Some(account), Some(currency), Some(amount)) = (account, currency, amount) else {
                f.push(
                    "bad_row",
                    format!("view row {item}/{idx} of {holder} is incomplete"),
                );
                return;
            };
            let key = (account, currency);
            if !self.overflowed.contains(&key)
                && add_posting(self.applied.entry(key.clone()).or_default(), amount, &key.0)
                    .is_err()
            {
                f.push(
                    "balance_drift",
                    format!(
                        "{} {}: the sum of its applied postings overflows",
                        key.0, key.1
                    ),
                );
                self.overflowed.insert(key);
            }
        } else {
            f.push(
                "bad_row",
                format!("{holder} (partition {partition}) has an unknown row {item:?}"),
            );
        }
    }

    /// The partition read: its snapshots against the postings applied in it.
    fn finish_partition(&mut self, f: &mut Findings) {
        self.pending.extend(self.current.take());
        let Some((holder, partition)) = self.part.take() else {
            return;
        };
        let snaps = std::mem::take(&mut self.snaps);
        let applied = std::mem::take(&mut self.applied);
        let overflowed = std::mem::take(&mut self.overflowed);
        let keys: BTreeSet<&(String, String)> = snaps.keys().chain(applied.keys()).collect();
        for key in keys {
            if overflowed.contains(key) {
                continue;
            }
            let (account, currency) = key;
            let (snap, sums) = (snaps.get(key), applied.get(key));
            if snap == sums {
                continue;
            }
            let detail = match sums {
                Some(s) => format!(
                    "{account} {currency} ({holder}, partition {partition}): applied postings \
                     net {} (in {}, out {}), snapshot {snap:?}",
                    s.0, s.1, s.2
                ),
                None => format!(
                    "{account} {currency} ({holder}, partition {partition}): no applied \
                     postings, snapshot {snap:?}"
                ),
            };
            f.push("balance_drift", detail);
        }
    }
}

#[async_trait]
impl LedgerStore for ScyllaStore {
    async fn write_batch(
        &self,
        txns: Vec<LedgerTxn>,
        cursor_name: &str,
        partition: u32,
        cursor_seq: u64,
    ) -> Result<BatchOutcome, StoreError> {
        super::log::check_partition(partition)?;
        // 1. What is stored already: same content is skipped, other content refuses the batch.
        let orders: BTreeSet<String> = txns.iter().map(|t| t.order_id().to_string()).collect();
        let stored = self.stored_of_orders(orders.into_iter().collect()).await?;
        let existing: HashMap<(&str, &str), &Stored> = stored
            .values()
            .flatten()
            .map(|s| ((s.order_id.as_str(), s.txn_id.as_str()), s))
            .collect();
        let mut outcome = BatchOutcome::default();
        let mut seen: HashMap<&str, Content> = HashMap::new();
        let mut distinct: Vec<&LedgerTxn> = Vec::new();
        let mut fresh: Vec<&LedgerTxn> = Vec::new();
        for t in &txns {
            let c = content_of(t);
            if let Some(before) = seen.get(t.id()) {
                if *before != c {
                    return Err(StoreError::IdConflict(t.id().to_string()));
                }
                outcome.skipped += 1;
                continue;
            }
            match existing.get(&(t.order_id(), t.id())) {
                Some(s) => {
                    if s.content().as_ref() != Some(&c) {
                        return Err(StoreError::IdConflict(t.id().to_string()));
                    }
                    outcome.skipped += 1;
                }
                None => {
                    outcome.written += 1;
                    outcome.postings += t.postings().len();
                    fresh.push(t);
                }
            }
            seen.insert(t.id(), c);
            distinct.push(t);
        }
        // 2. Each new transaction: one single-partition batch.
        let created_ms = now_ms();
        // Collected first: a stream mapping by a closure over references is not `Send` enough
        // for `async_trait`.
        let writes: Vec<_> = fresh
            .into_iter()
            .map(|t| self.insert_txn(t, created_ms))
            .collect();
        futures::stream::iter(writes)
            .buffer_unordered(READS_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        // 3. The views and snapshots, per holder, of every transaction of the batch not
        // applied yet (new ones, and stored ones a crash kept from being applied).
        let mut by_holder: BTreeMap<String, Vec<&LedgerTxn>> = BTreeMap::new();
        for t in &distinct {
            let holders: BTreeSet<String> =
                t.postings().iter().map(|p| holder(&p.account)).collect();
            for h in holders {
                by_holder.entry(h).or_default().push(t);
            }
        }
        let applies: Vec<_> = by_holder
            .into_iter()
            .map(
                |(h, ts)| async move { self.apply_to_holder(&h, partition, cursor_seq, &ts).await },
            )
            .collect();
        futures::stream::iter(applies)
            .buffer_unordered(READS_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        // 4. The cursor, last.
        self.set_cursor(cursor_name, partition, cursor_seq).await?;
        Ok(outcome)
    }

    async fn transactions_for_orders(
        &self,
        order_ids: Vec<String>,
    ) -> Result<BTreeMap<String, Vec<LedgerTxn>>, StoreError> {
        let stored = self.stored_of_orders(order_ids).await?;
        stored
            .into_iter()
            .map(|(id, txns)| {
                let txns = txns
                    .iter()
                    .map(|s| s.decode().map(|b| b.txn))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((id, txns))
            })
            .collect()
    }

    async fn order_ledger(&self, order_id: &OrderId) -> Result<Vec<BookedTxn>, StoreError> {
        self.stored_of_order(order_id.as_str())
            .await?
            .iter()
            .map(Stored::decode)
            .collect()
    }

    async fn merchant_balances(
        &self,
        merchant: &MerchantId,
    ) -> Result<Vec<AccountBalance>, StoreError> {
        let h = format!("m:{}", merchant.as_str());
        let mut total: BTreeMap<(String, String), Sums> = BTreeMap::new();
        for p in 0..self.log_partitions() {
            for (key, sums) in self.holder_balances(&h, p).await? {
                let what = key.0.clone();
                add_sums(total.entry(key).or_default(), sums, &what)?;
            }
        }
        total
            .into_iter()
            .map(|((account, currency), (balance, inflow, outflow))| {
                let account = Account::parse(&account)
                    .map_err(|e| StoreError::Corrupt(format!("ledger balance: {e}")))?;
                Ok(AccountBalance {
                    account,
                    currency,
                    balance,
                    inflow,
                    outflow,
                })
            })
            .collect()
    }

    async fn scan_ledger(&self, max_findings: usize) -> Result<LedgerScan, StoreError> {
        let mut f = Findings {
            max: max_findings,
            found: Vec::new(),
        };
        let mut scan = Scan::default();
        // The current order's transactions (partitions come whole, one after the other).
        let mut current: Vec<Stored> = Vec::new();
        let mut state = PagingState::start();
        loop {
            let (result, next) = self.ledger_page(&self.ledger_st.scan_rows, state).await?;
            let rows = result.into_rows_result().map_err(be)?;
            for row in rows.rows::<TxnRow>().map_err(be)? {
                let row = row.map_err(be)?;
                if current.last().is_some_and(|s| s.order_id != row.0) {
                    for s in &current {
                        scan.txn(&mut f, s);
                    }
                    scan.order(&mut f, &current);
                    current.clear();
                }
                push_row(&mut current, row);
            }
            match next {
                PagingStateResponse::HasMorePages { state: s } => state = s,
                PagingStateResponse::NoMorePages => break,
            }
        }
        for s in &current {
            scan.txn(&mut f, s);
        }
        scan.order(&mut f, &current);
        // The views: per partition of `ledger_accounts`, the snapshots against the postings
        // applied there; every applied posting against its stored transaction.
        let mut views = Views::default();
        let mut state = PagingState::start();
        loop {
            let (result, next) = self.ledger_page(&self.ledger_st.scan_views, state).await?;
            let rows: Vec<ViewRow> = result
                .into_rows_result()
                .map_err(be)?
                .rows::<ViewRow>()
                .map_err(be)?
                .collect::<Result<_, _>>()
                .map_err(be)?;
            for row in rows {
                views.row(&mut f, row);
                if views.pending.len() >= super::MAX_IN_KEYS {
                    let pending = std::mem::take(&mut views.pending);
                    self.check_applied(&mut f, pending).await?;
                }
            }
            match next {
                PagingStateResponse::HasMorePages { state: s } => state = s,
                PagingStateResponse::NoMorePages => break,
            }
        }
        views.finish_partition(&mut f);
        let pending = std::mem::take(&mut views.pending);
        self.check_applied(&mut f, pending).await?;
        Ok(LedgerScan {
            transactions: scan.transactions,
            postings: scan.postings,
            findings: f.found,
        })
    }

    async fn audit_orders(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<AuditOrder>, StoreError> {
        let mut out = Vec::new();
        let mut after = after;
        while out.len() < limit {
            let want = (limit - out.len()).min(SCAN_PAGE as usize) as i32;
            let result = match &after {
                None => self.exec(&self.ledger_st.audit_first, (want,)).await?,
                Some(a) => {
                    self.exec(&self.ledger_st.audit_after, (a.as_str(), want))
                        .await?
                }
            };
            let rows = result.into_rows_result().map_err(be)?;
            let read = rows.rows_num();
            for row in rows.rows::<(String, Option<String>)>().map_err(be)? {
                let (order_id, body) = row.map_err(be)?;
                after = Some(order_id);
                // A partition without the order's state (no create stored it) is no order.
                let Some(body) = body else { continue };
                let order: Order = serde_json::from_str(&body)
                    .map_err(|e| StoreError::Corrupt(format!("order body: {e}")))?;
                let partition = super::log::partition_of(order.order_id.as_str());
                out.push(AuditOrder {
                    order,
                    last_event: LastEvent::InPartition(partition),
                });
            }
            if read < want as usize {
                break;
            }
        }
        Ok(out)
    }

    async fn raw_postings_for_orders(
        &self,
        order_ids: Vec<String>,
    ) -> Result<BTreeMap<String, Vec<RawPosting>>, StoreError> {
        let stored = self.stored_of_orders(order_ids).await?;
        Ok(stored
            .into_iter()
            .map(|(id, txns)| {
                let rows = txns
                    .iter()
                    .filter_map(|s| Some((s, s.head.as_ref()?)))
                    .flat_map(|(s, h)| {
                        s.legs.iter().map(move |l| RawPosting {
                            txn_id: s.txn_id.clone(),
                            kind: h.kind.clone().unwrap_or_default(),
                            account: l.account.clone().unwrap_or_default(),
                            currency: l.currency.clone().unwrap_or_default(),
                            amount: l.amount.unwrap_or(0),
                        })
                    })
                    .collect();
                (id, rows)
            })
            .collect())
    }
}
