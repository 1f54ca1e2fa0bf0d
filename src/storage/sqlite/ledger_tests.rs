//! The ledger tables against a real database file: the whole-ledger scan finding rows edited
//! behind the store's back. (Replays, conflicts and balances are conformance cases,
//! `storage::conformance_ledger`, run on this backend too.)

use super::*;
use crate::config::SqliteSettings;
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
