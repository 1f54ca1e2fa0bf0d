//! The `LedgerStore` conformance cases, run on every backend: on SQLite always (`mod sqlite` at
//! the end of this file), on the CQL backend when `PAYCORE_TEST_CQL` names a server
//! (`storage::scylla::ledger_tests`). Each case uses a merchant, orders and a cursor name of its
//! own, so the cases may share one database or keyspace (the whole-ledger scan then covers the
//! other cases' rows too, which are all good).

use super::conformance::{merchant, new_order, token};
use super::{BatchOutcome, CreateOutcome, EventLog, LedgerStore, OrderRecords, StoreError};
use crate::domain::ledger::{
    Account, AccountBalance, AccountKind, LedgerTxn, Posting, TxnKind, TxnParts,
};
use crate::domain::{MerchantId, OrderId};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// A cursor name no other case uses.
fn cursor_name(case: &str) -> String {
    format!("ledger_{case}_{}", OrderId::generate().as_str())
}

fn txn(
    merchant: &str,
    id: &str,
    order: &str,
    kind: TxnKind,
    resolves: Option<&str>,
    legs: &[(&str, i64)],
) -> LedgerTxn {
    LedgerTxn::new(TxnParts {
        id: id.into(),
        order_id: order.into(),
        merchant_id: merchant.into(),
        event_id: format!("evt_{id}"),
        kind,
        resolves: resolves.map(str::to_string),
        reference: Some("T1".into()),
        postings: legs
            .iter()
            .map(|(a, n)| Posting::new(Account::parse(a).unwrap(), "CNY", *n))
            .collect(),
    })
    .unwrap()
}

/// An order paid `amount` through a hold and refunded `refund`: three transactions, eight
/// postings, in the order booked (their ids sort so).
pub fn paid_and_refunded(m: &str, order: &str, amount: i64, refund: i64) -> Vec<LedgerTxn> {
    let hold = format!("lt_{order}_1h");
    let (pending, payable) = (
        format!("merchant_pending:{m}"),
        format!("merchant_payable:{m}"),
    );
    vec![
        txn(
            m,
            &hold,
            order,
            TxnKind::Hold,
            None,
            &[("channel_pending:sim", -amount), (&pending, amount)],
        ),
        txn(
            m,
            &format!("lt_{order}_2p"),
            order,
            TxnKind::Post,
            Some(&hold),
            &[
                ("channel_pending:sim", amount),
                (&pending, -amount),
                ("channel_clearing:sim", -amount),
                (&payable, amount),
            ],
        ),
        txn(
            m,
            &format!("lt_{order}_3r"),
            order,
            TxnKind::Refund,
            None,
            &[(&payable, -refund), ("channel_clearing:sim", refund)],
        ),
    ]
}

fn balance(all: &[AccountBalance], kind: AccountKind) -> (i64, i64, i64) {
    all.iter()
        .find(|b| b.account.kind() == kind)
        .map_or((0, 0, 0), |b| (b.balance, b.inflow, b.outflow))
}

/// Balances a merchant's accounts must have: the sums of the postings on them.
fn expected_balances(txns: &[LedgerTxn]) -> BTreeMap<(String, String), (i64, i64, i64)> {
    let mut out: BTreeMap<(String, String), (i64, i64, i64)> = BTreeMap::new();
    for t in txns {
        for p in t
            .postings()
            .iter()
            .filter(|p| p.account.merchant().is_some())
        {
            let e = out
                .entry((p.account.to_string(), p.currency.clone()))
                .or_default();
            e.0 = e.0.checked_add(p.amount).unwrap();
            if p.amount > 0 {
                e.1 += p.amount;
            } else {
                e.2 -= p.amount;
            }
        }
    }
    out
}

fn as_map(all: Vec<AccountBalance>) -> BTreeMap<(String, String), (i64, i64, i64)> {
    all.into_iter()
        .map(|b| {
            (
                (b.account.to_string(), b.currency),
                (b.balance, b.inflow, b.outflow),
            )
        })
        .collect()
}

/// A batch and its cursor are written together; the same batch again (a crash after the write,
/// before the consumer heard) skips every transaction and moves no balance; the cursor never
/// moves back; a batch part old, part new, with a duplicate inside, counts only the new.
pub async fn replay_is_idempotent(store: &dyn LedgerStore, log: &dyn EventLog) {
    let m = merchant("lr");
    let demo = MerchantId::parse(&m).unwrap();
    let cursor = cursor_name("replay");
    let order = OrderId::generate();
    let txns = paid_and_refunded(&m, order.as_str(), 1000, 300);
    let out = store
        .write_batch(txns.clone(), &cursor, 0, 7)
        .await
        .unwrap();
    assert_eq!(
        out,
        BatchOutcome {
            written: 3,
            skipped: 0,
            postings: 8
        }
    );
    assert_eq!(log.cursor(&cursor, 0).await.unwrap(), 7);
    let booked: Vec<LedgerTxn> = store
        .order_ledger(&order)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.txn)
        .collect();
    assert_eq!(booked, txns);
    let balances = store.merchant_balances(&demo).await.unwrap();
    assert_eq!(
        balance(&balances, AccountKind::MerchantPayable),
        (700, 1000, 300)
    );
    assert_eq!(
        balance(&balances, AccountKind::MerchantPending),
        (0, 1000, 1000)
    );
    // Channel accounts are nobody's merchant account.
    assert_eq!(balances.len(), 2, "{balances:?}");
    assert!(
        store
            .merchant_balances(&MerchantId::parse(&merchant("lr")).unwrap())
            .await
            .unwrap()
            .is_empty()
    );

    let again = store
        .write_batch(txns.clone(), &cursor, 0, 5)
        .await
        .unwrap();
    assert_eq!(
        again,
        BatchOutcome {
            written: 0,
            skipped: 3,
            postings: 0
        }
    );
    assert_eq!(store.merchant_balances(&demo).await.unwrap(), balances);
    assert_eq!(log.cursor(&cursor, 0).await.unwrap(), 7);

    let second = OrderId::generate();
    let mut mixed = vec![txns[0].clone()];
    mixed.extend(paid_and_refunded(&m, second.as_str(), 1000, 300));
    mixed.push(mixed[1].clone());
    let out = store.write_batch(mixed, &cursor, 0, 9).await.unwrap();
    assert_eq!(
        out,
        BatchOutcome {
            written: 3,
            skipped: 2,
            postings: 8
        }
    );
    let balances = store.merchant_balances(&demo).await.unwrap();
    assert_eq!(
        balance(&balances, AccountKind::MerchantPayable),
        (1400, 2000, 600)
    );
    assert_eq!(log.cursor(&cursor, 0).await.unwrap(), 9);
    let by_order = store
        .transactions_for_orders(vec![
            order.to_string(),
            second.to_string(),
            "ord_none".into(),
        ])
        .await
        .unwrap();
    assert_eq!(by_order[order.as_str()], txns);
    assert_eq!(by_order[second.as_str()].len(), 3);
    assert!(by_order["ord_none"].is_empty());
    let raw = store
        .raw_postings_for_orders(vec![order.to_string()])
        .await
        .unwrap();
    let raw = &raw[order.as_str()];
    assert_eq!(raw.len(), 8);
    assert_eq!(raw[0].kind, "hold");
    assert_eq!(raw[7].amount, 300);
}

/// A transaction id stored with other content refuses the whole batch: nothing of it is
/// written, not the fresh transactions before the conflict, not the balances, not the cursor.
pub async fn conflict_writes_nothing(store: &dyn LedgerStore, log: &dyn EventLog) {
    let m = merchant("lc");
    let demo = MerchantId::parse(&m).unwrap();
    let cursor = cursor_name("conflict");
    let order = OrderId::generate();
    let txns = paid_and_refunded(&m, order.as_str(), 1000, 300);
    store
        .write_batch(txns.clone(), &cursor, 0, 3)
        .await
        .unwrap();
    let before = store.merchant_balances(&demo).await.unwrap();

    let other = OrderId::generate();
    let fresh = paid_and_refunded(&m, other.as_str(), 500, 100);
    let forged = txn(
        &m,
        txns[2].id(),
        order.as_str(),
        TxnKind::Refund,
        None,
        &[
            (&format!("merchant_payable:{m}"), -301),
            ("channel_clearing:sim", 301),
        ],
    );
    let err = store
        .write_batch(
            vec![fresh[0].clone(), fresh[1].clone(), forged],
            &cursor,
            0,
            4,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::IdConflict(id) if id == txns[2].id()),
        "{err:?}"
    );
    assert!(store.order_ledger(&other).await.unwrap().is_empty());
    assert_eq!(store.merchant_balances(&demo).await.unwrap(), before);
    assert_eq!(log.cursor(&cursor, 0).await.unwrap(), 3);
    // Other content in any field is a conflict: the event, the hold resolved.
    let t = &txns[0];
    let other_event = LedgerTxn::new(TxnParts {
        id: t.id().into(),
        order_id: t.order_id().into(),
        merchant_id: m.clone(),
        event_id: "evt_else".into(),
        kind: t.kind(),
        resolves: None,
        reference: t.reference().map(str::to_string),
        postings: t.postings().to_vec(),
    })
    .unwrap();
    assert!(matches!(
        store.write_batch(vec![other_event], &cursor, 0, 4).await,
        Err(StoreError::IdConflict(_))
    ));
    let p = &txns[1];
    let unresolved = LedgerTxn::new(TxnParts {
        id: p.id().into(),
        order_id: p.order_id().into(),
        merchant_id: m.clone(),
        event_id: p.event_id().into(),
        kind: p.kind(),
        resolves: None,
        reference: p.reference().map(str::to_string),
        postings: p.postings().to_vec(),
    })
    .unwrap();
    assert!(matches!(
        store.write_batch(vec![unresolved], &cursor, 0, 4).await,
        Err(StoreError::IdConflict(_))
    ));
    // Two versions of one id inside one batch, neither stored: refused too.
    let a = paid_and_refunded(&m, other.as_str(), 500, 100);
    let b = paid_and_refunded(&m, other.as_str(), 500, 101);
    assert!(matches!(
        store
            .write_batch(vec![a[2].clone(), b[2].clone()], &cursor, 0, 4)
            .await,
        Err(StoreError::IdConflict(_))
    ));
    assert!(store.order_ledger(&other).await.unwrap().is_empty());
    assert_eq!(store.merchant_balances(&demo).await.unwrap(), before);
    assert_eq!(log.cursor(&cursor, 0).await.unwrap(), 3);
}

/// Orders' ledgers come back in the order booked, every transaction balanced, whatever order
/// the batch had them in and however the batches were cut.
pub async fn postings_balanced_and_in_order(store: &dyn LedgerStore, log: &dyn EventLog) {
    let m = merchant("lo");
    let cursor = cursor_name("order");
    let orders: Vec<OrderId> = (0..3).map(|_| OrderId::generate()).collect();
    let mut all: Vec<LedgerTxn> = Vec::new();
    for (i, o) in orders.iter().enumerate() {
        all.extend(paid_and_refunded(&m, o.as_str(), 100 * (i as i64 + 1), 10));
    }
    // Interleaved across orders, the refunds first: storage orders them by id.
    let mut shuffled = all.clone();
    shuffled.reverse();
    let (first, rest) = shuffled.split_at(4);
    store
        .write_batch(first.to_vec(), &cursor, 0, 1)
        .await
        .unwrap();
    store
        .write_batch(rest.to_vec(), &cursor, 0, 2)
        .await
        .unwrap();
    assert_eq!(log.cursor(&cursor, 0).await.unwrap(), 2);
    for o in &orders {
        let booked = store.order_ledger(o).await.unwrap();
        let mine: Vec<&LedgerTxn> = all.iter().filter(|t| t.order_id() == o.as_str()).collect();
        assert_eq!(booked.iter().map(|b| &b.txn).collect::<Vec<_>>(), mine);
        let kinds: Vec<&str> = booked.iter().map(|b| b.txn.kind().as_str()).collect();
        assert_eq!(kinds, ["hold", "post", "refund"]);
        for b in &booked {
            let sum: i64 = b.txn.postings().iter().map(|p| p.amount).sum();
            assert_eq!(sum, 0, "{:?}", b.txn);
            assert!(b.created_at > OffsetDateTime::UNIX_EPOCH);
        }
    }
    let balances = as_map(
        store
            .merchant_balances(&MerchantId::parse(&m).unwrap())
            .await
            .unwrap(),
    );
    assert_eq!(balances, expected_balances(&all));
}

/// The consumers of two log partitions (one, on a backend with one) write at the same time:
/// a merchant's balances are the sums of its postings across both, and replaying both batches
/// changes nothing.
pub async fn balances_across_partitions(store: &dyn LedgerStore, log: &dyn EventLog) {
    let m = merchant("lp");
    let demo = MerchantId::parse(&m).unwrap();
    let cursor = cursor_name("parts");
    let two = log.log_partitions() >= 2;
    let mut halves: [Vec<LedgerTxn>; 2] = [Vec::new(), Vec::new()];
    for i in 0..6 {
        let o = OrderId::generate();
        halves[i % 2].extend(paid_and_refunded(
            &m,
            o.as_str(),
            1000 + i as i64,
            i as i64 + 1,
        ));
    }
    let all: Vec<LedgerTxn> = halves.iter().flatten().cloned().collect();
    let (p0, p1) = if two { (0, 1) } else { (0, 0) };
    if two {
        let (a, b) = tokio::join!(
            store.write_batch(halves[0].clone(), &cursor, p0, 10),
            store.write_batch(halves[1].clone(), &cursor, p1, 20),
        );
        assert_eq!(a.unwrap().written, 9);
        assert_eq!(b.unwrap().written, 9);
    } else {
        for (i, h) in halves.iter().enumerate() {
            let out = store
                .write_batch(h.clone(), &cursor, 0, 10 * (i as u64 + 1))
                .await
                .unwrap();
            assert_eq!(out.written, 9);
        }
    }
    let expected = expected_balances(&all);
    assert_eq!(expected.len(), 2);
    assert_eq!(
        as_map(store.merchant_balances(&demo).await.unwrap()),
        expected
    );
    // Both consumers again, as after a crash before either heard: nothing moves.
    let (a, b) = tokio::join!(
        store.write_batch(halves[0].clone(), &cursor, p0, 10),
        store.write_batch(halves[1].clone(), &cursor, p1, 20),
    );
    assert_eq!(a.unwrap().skipped, 9);
    assert_eq!(b.unwrap().skipped, 9);
    assert_eq!(
        as_map(store.merchant_balances(&demo).await.unwrap()),
        expected
    );
    if two {
        assert_eq!(log.cursor(&cursor, 0).await.unwrap(), 10);
        assert_eq!(log.cursor(&cursor, 1).await.unwrap(), 20);
    } else {
        assert_eq!(log.cursor(&cursor, 0).await.unwrap(), 20);
    }
    // A partition the log does not have is refused.
    assert!(
        store
            .write_batch(halves[0].clone(), &cursor, log.log_partitions(), 30)
            .await
            .is_err()
    );
}

/// One batch larger than any chunk a backend writes in (120 transactions, a channel account
/// with 120 postings in it): every balance is the sum of its postings, and the replay skips all.
pub async fn a_large_batch(store: &dyn LedgerStore, log: &dyn EventLog) {
    let m = merchant("lb");
    let demo = MerchantId::parse(&m).unwrap();
    let cursor = cursor_name("large");
    let mut all = Vec::new();
    for i in 0..40 {
        let o = OrderId::generate();
        all.extend(paid_and_refunded(&m, o.as_str(), 100 + i, 1 + i));
    }
    let out = store.write_batch(all.clone(), &cursor, 0, 3).await.unwrap();
    assert_eq!((out.written, out.postings), (120, 320));
    let expected = expected_balances(&all);
    assert_eq!(
        as_map(store.merchant_balances(&demo).await.unwrap()),
        expected
    );
    let again = store.write_batch(all.clone(), &cursor, 0, 3).await.unwrap();
    assert_eq!((again.written, again.skipped), (0, 120));
    assert_eq!(
        as_map(store.merchant_balances(&demo).await.unwrap()),
        expected
    );
    assert_eq!(log.cursor(&cursor, 0).await.unwrap(), 3);
    assert_eq!(store.scan_ledger(10).await.unwrap().findings, vec![]);
}

/// The whole-ledger scan of a good ledger finds nothing and counts what is stored.
pub async fn scan_finds_nothing_on_a_good_ledger(store: &dyn LedgerStore) {
    let m = merchant("ls");
    let cursor = cursor_name("scan");
    let before = store.scan_ledger(100).await.unwrap();
    assert_eq!(before.findings, vec![]);
    let o = OrderId::generate();
    let txns = paid_and_refunded(&m, o.as_str(), 700, 70);
    store.write_batch(txns, &cursor, 0, 1).await.unwrap();
    let after = store.scan_ledger(100).await.unwrap();
    assert_eq!(after.findings, vec![]);
    assert!(after.transactions >= before.transactions + 3);
    assert!(after.postings >= before.postings + 8);
}

/// `audit_orders` pages through every order once, whatever the page size.
pub async fn audit_orders_pages_every_order(store: &dyn LedgerStore, orders: &dyn OrderRecords) {
    let m = merchant("la");
    let now = OffsetDateTime::now_utc();
    let mut mine = Vec::new();
    for no in ["A", "B", "C"] {
        let (o, e) = new_order(&m, no);
        let t = token(orders, &m, 60).await;
        assert_eq!(
            orders
                .create_order(t, o.clone(), e, vec![], now)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        mine.push(o.order_id.to_string());
    }
    let mut seen: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100_000 {
        let page = store.audit_orders(after.clone(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.order.order_id.to_string());
        seen.extend(page.iter().map(|o| o.order.order_id.to_string()));
    }
    let n = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), n, "an order came twice");
    for id in &mine {
        assert!(seen.contains(id), "{id} not audited");
    }
}

/// Real histories from the state machine (paid and refunded, paid twice, closed while paying,
/// a failed refund), booked by the domain, written in two batches with the first written again:
/// each order's ledger is what the domain booked, in order, and reconciles with the order
/// (`ledger verify`'s per-order check over the raw rows); the merchant's balances are the sums.
/// Uses the domain's test merchant `demo`, which no other case uses.
pub async fn real_histories_reconcile(store: &dyn LedgerStore, log: &dyn EventLog) {
    use crate::domain::ledger::tests::{Step, book_all, history};
    use crate::domain::ledger_audit::check_order;
    let cursor = cursor_name("real");
    let histories = [
        vec![
            Step::Paying,
            Step::Paid(0, true, true),
            Step::Refund(300),
            Step::Settle(0, true),
        ],
        vec![
            Step::Paying,
            Step::Paid(0, true, true),
            Step::Paid(1, true, true),
            Step::Refund(1000),
            Step::Settle(0, false),
        ],
        vec![Step::Paying, Step::Close],
        vec![Step::Paying],
    ];
    let mut orders = Vec::new();
    let mut all: Vec<LedgerTxn> = Vec::new();
    for (i, steps) in histories.iter().enumerate() {
        let (order, events) = history(1_000 + i as i64, false, steps);
        all.extend(book_all(&events).unwrap());
        orders.push(order);
    }
    all.sort_by(|a, b| a.event_id().cmp(b.event_id()).then(a.id().cmp(b.id())));
    assert!(all.len() >= 8, "{all:?}");
    let (first, second) = all.split_at(all.len() / 2);
    store
        .write_batch(first.to_vec(), &cursor, 0, 1)
        .await
        .unwrap();
    let mut replay = first.to_vec();
    replay.extend_from_slice(second);
    let out = store.write_batch(replay, &cursor, 0, 2).await.unwrap();
    assert_eq!((out.written, out.skipped), (second.len(), first.len()));
    assert_eq!(log.cursor(&cursor, 0).await.unwrap(), 2);
    let ids: Vec<String> = orders.iter().map(|o| o.order_id.to_string()).collect();
    let raw = store.raw_postings_for_orders(ids.clone()).await.unwrap();
    let by_order = store.transactions_for_orders(ids).await.unwrap();
    for o in &orders {
        let mine: Vec<LedgerTxn> = all
            .iter()
            .filter(|t| t.order_id() == o.order_id.as_str())
            .cloned()
            .collect();
        let booked: Vec<LedgerTxn> = store
            .order_ledger(&o.order_id)
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.txn)
            .collect();
        assert_eq!(booked, mine);
        assert_eq!(by_order[o.order_id.as_str()], mine);
        assert_eq!(
            check_order(o, &raw[o.order_id.as_str()]),
            Vec::<String>::new(),
            "{o:?}"
        );
    }
    let demo = MerchantId::parse("demo").unwrap();
    assert_eq!(
        as_map(store.merchant_balances(&demo).await.unwrap()),
        expected_balances(&all)
    );
    assert_eq!(store.scan_ledger(10).await.unwrap().findings, vec![]);
}

mod sqlite {
    use crate::config::SqliteSettings;
    use crate::metrics::Metrics;
    use crate::storage::sqlite::SqliteStore;
    use std::sync::Arc;

    fn open(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
        let settings = SqliteSettings {
            path: dir.path().join("l.db").to_string_lossy().into_owned(),
            ..SqliteSettings::default()
        };
        Arc::new(SqliteStore::open(&settings, Arc::new(Metrics::new())).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        super::replay_is_idempotent(s.as_ref(), s.as_ref()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conflict_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        super::conflict_writes_nothing(s.as_ref(), s.as_ref()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postings_balanced_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        super::postings_balanced_and_in_order(s.as_ref(), s.as_ref()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn balances_across_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        super::balances_across_partitions(s.as_ref(), s.as_ref()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scan_finds_nothing_on_a_good_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        super::scan_finds_nothing_on_a_good_ledger(s.as_ref()).await;
        // Exact on a store of its own.
        let scan = crate::storage::LedgerStore::scan_ledger(s.as_ref(), 10)
            .await
            .unwrap();
        assert_eq!((scan.transactions, scan.postings), (3, 8));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_histories_reconcile() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        super::real_histories_reconcile(s.as_ref(), s.as_ref()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        super::a_large_batch(s.as_ref(), s.as_ref()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn audit_orders_pages_every_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        super::audit_orders_pages_every_order(s.as_ref(), s.as_ref()).await;
    }
}
