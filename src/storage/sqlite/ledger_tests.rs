//! The ledger tables against a real database file: a batch and its cursor in one transaction,
//! idempotent replays, conflicting replays refused whole, balance snapshots, and the
//! whole-ledger scan finding rows edited behind the store's back.

use super::*;
use crate::config::SqliteSettings;
use crate::domain::ledger::AccountKind;
use crate::metrics::Metrics;
use crate::storage::EventLog;
use crate::storage::OrderStore;
use std::sync::Arc;

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    let s = SqliteSettings {
        path: dir.path().join("l.db").to_string_lossy().into_owned(),
        ..SqliteSettings::default()
    };
    SqliteStore::open(&s, Arc::new(Metrics::new())).unwrap()
}

fn raw(dir: &tempfile::TempDir) -> Connection {
    Connection::open(dir.path().join("l.db")).unwrap()
}

fn p(account: &str, amount: i64) -> Posting {
    Posting::new(Account::parse(account).unwrap(), "CNY", amount)
}

fn txn(
    id: &str,
    order: &str,
    kind: TxnKind,
    resolves: Option<&str>,
    legs: &[(&str, i64)],
) -> LedgerTxn {
    LedgerTxn::new(TxnParts {
        id: id.into(),
        order_id: order.into(),
        merchant_id: "demo".into(),
        event_id: format!("evt_{id}"),
        kind,
        resolves: resolves.map(str::to_string),
        reference: None,
        postings: legs.iter().map(|(a, n)| p(a, *n)).collect(),
    })
    .unwrap()
}

/// An order paid 1000 through a hold and refunded 300.
fn paid_and_refunded(order: &str) -> Vec<LedgerTxn> {
    let hold = format!("lt_{order}_h");
    vec![
        txn(
            &hold,
            order,
            TxnKind::Hold,
            None,
            &[
                ("channel_pending:sim", -1000),
                ("merchant_pending:demo", 1000),
            ],
        ),
        txn(
            &format!("lt_{order}_p"),
            order,
            TxnKind::Post,
            Some(&hold),
            &[
                ("channel_pending:sim", 1000),
                ("merchant_pending:demo", -1000),
                ("channel_clearing:sim", -1000),
                ("merchant_payable:demo", 1000),
            ],
        ),
        txn(
            &format!("lt_{order}_r"),
            order,
            TxnKind::Refund,
            None,
            &[
                ("merchant_payable:demo", -300),
                ("channel_clearing:sim", 300),
            ],
        ),
    ]
}

fn balance(all: &[AccountBalance], kind: AccountKind) -> (i64, i64, i64) {
    all.iter()
        .find(|b| b.account.kind() == kind)
        .map_or((0, 0, 0), |b| (b.balance, b.inflow, b.outflow))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_and_its_cursor_commit_together_and_a_replay_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let demo = MerchantId::parse("demo").unwrap();
    let order = OrderId::generate();
    let txns = paid_and_refunded(order.as_str());
    let out = store
        .write_batch(txns.clone(), "ledger", 0, 7)
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
    assert_eq!(store.cursor("ledger", 0).await.unwrap(), 7);
    let booked: Vec<LedgerTxn> = store
        .order_ledger(&order)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.txn)
        .collect();
    assert_eq!(
        booked.iter().map(|t| t.id()).collect::<Vec<_>>(),
        txns.iter().map(|t| t.id()).collect::<Vec<_>>()
    );
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
    assert_eq!(balances.len(), 2);
    assert!(
        store
            .merchant_balances(&MerchantId::parse("other").unwrap())
            .await
            .unwrap()
            .is_empty()
    );

    // The same batch again (a crash after the commit, before the consumer heard): all skipped,
    // the balances untouched; the cursor never moves back.
    let again = store
        .write_batch(txns.clone(), "ledger", 0, 5)
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
    assert_eq!(store.cursor("ledger", 0).await.unwrap(), 7);
    // Part old, part new, and a duplicate inside the batch: only the new one counts.
    let second = OrderId::generate();
    let mut mixed = vec![txns[0].clone()];
    mixed.extend(paid_and_refunded(second.as_str()));
    mixed.push(mixed[1].clone());
    let out = store.write_batch(mixed, "ledger", 0, 9).await.unwrap();
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
    assert_eq!(store.cursor("ledger", 0).await.unwrap(), 9);
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
    let scan = store.scan_ledger(100).await.unwrap();
    assert_eq!(
        (scan.transactions, scan.postings, scan.findings),
        (6, 16, vec![])
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_id_with_other_content_refuses_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let demo = MerchantId::parse("demo").unwrap();
    let order = OrderId::generate();
    let txns = paid_and_refunded(order.as_str());
    store
        .write_batch(txns.clone(), "ledger", 0, 3)
        .await
        .unwrap();
    let before = store.merchant_balances(&demo).await.unwrap();

    let other = OrderId::generate();
    let fresh = paid_and_refunded(other.as_str());
    // The refund again under its id, for another amount.
    let forged = txn(
        txns[2].id(),
        order.as_str(),
        TxnKind::Refund,
        None,
        &[
            ("merchant_payable:demo", -301),
            ("channel_clearing:sim", 301),
        ],
    );
    let err = store
        .write_batch(
            vec![fresh[0].clone(), fresh[1].clone(), forged],
            "ledger",
            0,
            4,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::IdConflict(id) if id == txns[2].id()),
        "{err:?}"
    );
    // Nothing of it stands: not the fresh transactions before the conflict, not the balances,
    // not the cursor.
    assert!(store.order_ledger(&other).await.unwrap().is_empty());
    assert_eq!(store.merchant_balances(&demo).await.unwrap(), before);
    assert_eq!(store.cursor("ledger", 0).await.unwrap(), 3);
    // Other content in any field is a conflict: the event, the kind, the hold resolved.
    let mut other_event = txns[0].clone();
    other_event = LedgerTxn::new(TxnParts {
        id: other_event.id().into(),
        order_id: other_event.order_id().into(),
        merchant_id: "demo".into(),
        event_id: "evt_else".into(),
        kind: other_event.kind(),
        resolves: None,
        reference: None,
        postings: other_event.postings().to_vec(),
    })
    .unwrap();
    assert!(matches!(
        store.write_batch(vec![other_event], "ledger", 0, 4).await,
        Err(StoreError::IdConflict(_))
    ));
    let unresolved = txn(
        txns[1].id(),
        order.as_str(),
        TxnKind::Post,
        None,
        &[
            ("channel_pending:sim", 1000),
            ("merchant_pending:demo", -1000),
            ("channel_clearing:sim", -1000),
            ("merchant_payable:demo", 1000),
        ],
    );
    assert!(matches!(
        store.write_batch(vec![unresolved], "ledger", 0, 4).await,
        Err(StoreError::IdConflict(_))
    ));
    assert_eq!(store.scan_ledger(100).await.unwrap().findings, vec![]);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_finds_rows_edited_behind_the_stores_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let order = OrderId::generate();
    let txns = paid_and_refunded(order.as_str());
    store
        .write_batch(txns.clone(), "ledger", 0, 1)
        .await
        .unwrap();
    assert_eq!(store.scan_ledger(100).await.unwrap().findings, vec![]);
    let db = raw(&dir);
    // A refund posting made larger; a second void of the same hold; a posting whose
    // transaction is gone; a posting to an account outside the chart.
    db.execute(
        "UPDATE ledger_postings SET amount = -301 WHERE txn_id = ?1 AND idx = 0",
        [txns[2].id()],
    )
    .unwrap();
    db.execute_batch(&format!(
        "INSERT INTO ledger_transactions VALUES ('lt_v2', '{o}', 'demo', 'evt_v2', 'void', '{h}', NULL, 0);
         INSERT INTO ledger_postings VALUES ('lt_v2', 0, 'channel_pending:sim', 'CNY', 1000);
         INSERT INTO ledger_postings VALUES ('lt_v2', 1, 'merchant_pending:demo', 'CNY', -1000);
         INSERT INTO ledger_postings VALUES ('lt_gone', 0, 'wallet:x', 'CNY', 5);",
        o = order,
        h = txns[0].id()
    ))
    .unwrap();
    let scan = store.scan_ledger(100).await.unwrap();
    let checks: Vec<&str> = scan.findings.iter().map(|f| f.check).collect();
    for expected in [
        "unbalanced",
        "resolved_twice",
        "orphan_posting",
        "balance_drift",
        "bad_row",
    ] {
        assert!(
            checks.contains(&expected),
            "{expected} not found in {:#?}",
            scan.findings
        );
    }
    assert!(
        scan.findings
            .iter()
            .any(|f| f.check == "unbalanced" && f.detail.contains(txns[2].id())),
        "{:#?}",
        scan.findings
    );
    // The bound on findings holds.
    assert_eq!(store.scan_ledger(2).await.unwrap().findings.len(), 2);
    // A decoded read refuses the tampered transaction instead of answering it.
    assert!(matches!(
        store.order_ledger(&order).await,
        Err(StoreError::Corrupt(_))
    ));
    // The raw read used by verify still answers it as stored.
    let raw_rows = store
        .raw_postings_for_orders(vec![order.to_string()])
        .await
        .unwrap();
    assert!(raw_rows[order.as_str()].iter().any(|r| r.amount == -301));
    store.close().await;
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Real histories of a few orders, booked, written in arbitrary batches, with an arbitrary
    /// batch written again: the store holds each transaction once, every balance snapshot is
    /// the sum of its postings, and the scan finds nothing.
    #[test]
    fn any_split_and_replay_of_real_histories_stores_each_transaction_once(
        orders in proptest::collection::vec(
            (1i64..=5_000, proptest::prelude::any::<bool>(),
             proptest::collection::vec(crate::domain::ledger::tests::step(), 0..16)),
            1..4,
        ),
        cuts in proptest::collection::vec(0usize..64, 0..6),
        replay in proptest::prelude::any::<proptest::sample::Index>(),
    ) {
        use crate::domain::ledger::tests::{book_all, history};
        let mut all: Vec<LedgerTxn> = Vec::new();
        let mut ids = Vec::new();
        for (amount, fulfil, steps) in &orders {
            let (order, events) = history(*amount, *fulfil, steps);
            ids.push(order.order_id.clone());
            all.extend(book_all(&events).unwrap());
        }
        // Interleave the orders' transactions as a batch of events would, keeping each
        // order's own order.
        all.sort_by(|a, b| a.event_id().cmp(b.event_id()).then(a.id().cmp(b.id())));
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (all.len() + 1)).collect();
        bounds.extend([0, all.len()]);
        bounds.sort_unstable();
        bounds.dedup();
        let batches: Vec<Vec<LedgerTxn>> =
            bounds.windows(2).map(|w| all[w[0]..w[1]].to_vec()).collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = open(&dir);
            let mut written = 0;
            for (i, b) in batches.iter().enumerate() {
                written += store.write_batch(b.clone(), "ledger", 0, i as u64 + 1).await.unwrap().written;
            }
            assert_eq!(written, all.len());
            if !batches.is_empty() {
                let again = replay.get(&batches);
                let out = store.write_batch(again.clone(), "ledger", 0, 1).await.unwrap();
                assert_eq!((out.written, out.skipped), (0, again.len()));
            }
            assert_eq!(store.cursor("ledger", 0).await.unwrap(), batches.len() as u64);
            for id in &ids {
                let mine: Vec<LedgerTxn> =
                    all.iter().filter(|t| t.order_id() == id.as_str()).cloned().collect();
                let stored: Vec<LedgerTxn> =
                    store.order_ledger(id).await.unwrap().into_iter().map(|b| b.txn).collect();
                assert_eq!(stored, mine);
            }
            let mut expected: BTreeMap<(String, String), i64> = BTreeMap::new();
            for t in &all {
                for p in t.postings().iter().filter(|p| p.account.merchant().is_some()) {
                    *expected.entry((p.account.to_string(), p.currency.clone())).or_insert(0) += p.amount;
                }
            }
            let got: BTreeMap<(String, String), i64> = store
                .merchant_balances(&MerchantId::parse("demo").unwrap())
                .await
                .unwrap()
                .into_iter()
                .map(|b| ((b.account.to_string(), b.currency), b.balance))
                .collect();
            assert_eq!(got, expected);
            let scan = store.scan_ledger(10).await.unwrap();
            assert_eq!(scan.findings, vec![]);
            assert_eq!(scan.transactions, all.len() as u64);
            store.close().await;
        });
    }
}
