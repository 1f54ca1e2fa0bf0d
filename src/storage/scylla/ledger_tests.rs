//! The ledger conformance cases (`storage::conformance_ledger`) against a real CQL server
//! (`PAYCORE_TEST_CQL`, as in `tests`), one after the other in a keyspace of their own, made for
//! this run and dropped after it: the whole-ledger scan reads every row of the keyspace, so no
//! other case may write (or tamper) meanwhile. Then rows edited behind the store's back, which
//! the scan must find.

use super::ScyllaStore;
use crate::config::scylla::ScyllaSettings;
use crate::domain::OrderId;
use crate::storage::conformance_ledger as suite;
use crate::storage::{LedgerStore, StoreError};

use super::tests::CQL_ENV;

fn settings(contact: &str, keyspace: String) -> ScyllaSettings {
    ScyllaSettings {
        keyspace,
        ..super::tests::settings(contact)
    }
}

async fn cql(store: &ScyllaStore, statement: &str) {
    let mut s = scylla::statement::unprepared::Statement::new(statement.to_string());
    s.set_request_timeout(Some(std::time::Duration::from_secs(60)));
    store.session.query_unpaged(s, ()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_conforms() {
    let Ok(contact) = std::env::var(CQL_ENV) else {
        eprintln!("{CQL_ENV} is not set: the CQL ledger tests did not run");
        return;
    };
    let base = std::env::var("PAYCORE_TEST_CQL_KEYSPACE").unwrap_or_else(|_| "paycore".into());
    let keyspace = format!("{base}_l{}", std::process::id());
    let store = ScyllaStore::open(&settings(&contact, keyspace.clone()))
        .await
        .unwrap();
    suite::scan_finds_nothing_on_a_good_ledger(&store).await;
    suite::replay_is_idempotent(&store, &store).await;
    suite::conflict_writes_nothing(&store, &store).await;
    suite::postings_balanced_and_in_order(&store, &store).await;
    suite::balances_across_partitions(&store, &store).await;
    suite::audit_orders_pages_every_order(&store, &store).await;
    let scan = store.scan_ledger(100).await.unwrap();
    assert_eq!(scan.findings, vec![]);
    // Every case's transactions, counted by the scan: 1 + 2 + 1 + 3 + 6 orders of 3.
    assert_eq!((scan.transactions, scan.postings), (39, 104));

    suite::real_histories_reconcile(&store, &store).await;
    suite::a_large_batch(&store, &store).await;
    a_crash_before_the_snapshots_is_made_good(&store).await;
    tampered_rows_are_found(&store, &keyspace).await;
    super::tests::drop_keyspace(&store, &keyspace).await;
    eprintln!("CQL ledger suite: ran against {contact} in {keyspace}");
}

/// A refund posting made larger, a second void of the same hold, a posting whose transaction
/// is gone, to an account outside the chart: the scan names each, a decoded read refuses the
/// order, the raw read answers it as stored.
async fn tampered_rows_are_found(store: &ScyllaStore, ks: &str) {
    let m = crate::storage::conformance::merchant("lt");
    let order = OrderId::generate();
    let txns = suite::paid_and_refunded(&m, order.as_str(), 1000, 300);
    store
        .write_batch(txns.clone(), "ledger_tamper", 0, 1)
        .await
        .unwrap();
    assert_eq!(store.scan_ledger(100).await.unwrap().findings, vec![]);
    let (o, h, r) = (order.as_str(), txns[0].id(), txns[2].id());
    cql(
        store,
        &format!(
            "UPDATE {ks}.ledger_txns SET amount = -301 WHERE order_id = '{o}' \
             AND txn_id = '{r}' AND idx = 0"
        ),
    )
    .await;
    cql(
        store,
        &format!(
            "INSERT INTO {ks}.ledger_txns (order_id, txn_id, idx, merchant_id, event_id, kind, \
             resolves, created_at, postings) VALUES ('{o}', 'lt_v2', -1, '{m}', 'evt_v2', \
             'void', '{h}', 0, 2)"
        ),
    )
    .await;
    for (idx, account, amount) in [
        (0, "channel_pending:sim".to_string(), 1000),
        (1, format!("merchant_pending:{m}"), -1000),
    ] {
        cql(
            store,
            &format!(
                "INSERT INTO {ks}.ledger_txns (order_id, txn_id, idx, account, currency, amount) \
                 VALUES ('{o}', 'lt_v2', {idx}, '{account}', 'CNY', {amount})"
            ),
        )
        .await;
    }
    cql(
        store,
        &format!(
            "INSERT INTO {ks}.ledger_txns (order_id, txn_id, idx, account, currency, amount) \
             VALUES ('{o}', 'lt_gone', 0, 'wallet:x', 'CNY', 5)"
        ),
    )
    .await;
    // A snapshot moved behind the store's back, a view row whose transaction was never stored.
    cql(
        store,
        &format!(
            "UPDATE {ks}.ledger_accounts SET balance = 12345 WHERE holder = 'm:{m}' \
             AND partition = 0 AND item = 'b:merchant_payable:{m}/CNY' AND idx = 0"
        ),
    )
    .await;
    cql(
        store,
        &format!(
            "INSERT INTO {ks}.ledger_accounts (holder, partition, item, idx, account, currency, \
             amount, order_id) VALUES ('a:channel_clearing:lt', 0, 'p:lt_never', 0, \
             'channel_clearing:lt', 'CNY', 7, '{o}')"
        ),
    )
    .await;
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
            .any(|f| f.check == "unbalanced" && f.detail.contains(r)),
        "{:#?}",
        scan.findings
    );
    for (check, needle) in [
        // The snapshot tampered with.
        (
            "balance_drift",
            format!("merchant_payable:{m} CNY (m:{m}, partition 0)"),
        ),
        // The view row without its transaction, and the snapshot it lacks.
        ("orphan_posting", "p:lt_never/0".to_string()),
        ("balance_drift", "channel_clearing:lt CNY".to_string()),
        // The refund's view row no longer matches its (tampered) posting.
        ("bad_row", format!("p:{r}/0")),
    ] {
        assert!(
            scan.findings
                .iter()
                .any(|f| f.check == check && f.detail.contains(&needle)),
            "{check} {needle} not found in {:#?}",
            scan.findings
        );
    }
    assert_eq!(store.scan_ledger(2).await.unwrap().findings.len(), 2);
    assert!(matches!(
        store.order_ledger(&order).await,
        Err(StoreError::Corrupt(_))
    ));
    let raw = store
        .raw_postings_for_orders(vec![order.to_string()])
        .await
        .unwrap();
    assert!(raw[order.as_str()].iter().any(|r| r.amount == -301));
}

/// A crash after a batch's transactions were written and before their views and snapshots
/// (step 2 done, step 3 not): the replayed batch skips the transactions, as stored, and still
/// applies them to the snapshots, once.
async fn a_crash_before_the_snapshots_is_made_good(store: &ScyllaStore) {
    use crate::domain::MerchantId;
    let m = crate::storage::conformance::merchant("lk");
    let demo = MerchantId::parse(&m).unwrap();
    let order = OrderId::generate();
    let txns = suite::paid_and_refunded(&m, order.as_str(), 1000, 300);
    for t in &txns {
        store.insert_txn(t, super::now_ms()).await.unwrap();
    }
    assert!(store.merchant_balances(&demo).await.unwrap().is_empty());
    // Stored, not applied: a batch not booked yet (its cursor did not move), no finding.
    assert_eq!(store.scan_ledger(100).await.unwrap().findings, vec![]);
    // Applied in one holder only (a crash within step 3): no finding either.
    let refs: Vec<&crate::domain::ledger::LedgerTxn> = txns.iter().collect();
    store
        .apply_to_holder(&format!("m:{m}"), 0, 5, &refs)
        .await
        .unwrap();
    assert_eq!(store.scan_ledger(100).await.unwrap().findings, vec![]);
    for _ in 0..2 {
        let out = store
            .write_batch(txns.clone(), "ledger_crash", 0, 5)
            .await
            .unwrap();
        assert_eq!((out.written, out.skipped), (0, 3));
        let balances: Vec<(String, i64, i64, i64)> = store
            .merchant_balances(&demo)
            .await
            .unwrap()
            .into_iter()
            .map(|b| (b.account.to_string(), b.balance, b.inflow, b.outflow))
            .collect();
        assert_eq!(
            balances,
            vec![
                (format!("merchant_payable:{m}"), 700, 1000, 300),
                (format!("merchant_pending:{m}"), 0, 1000, 1000),
            ]
        );
    }
    assert_eq!(store.scan_ledger(100).await.unwrap().findings, vec![]);
}

/// `ledger verify` beside a live owner on the CQL log, which is not indexed by order: an order
/// with events after the ledger cursor, or with a change stored and not logged yet (its
/// intent), is not yet booked, never a failure; once booked it is checked, and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_judges_the_lag_of_an_unindexed_log() {
    use crate::actors::ledger::{CURSOR, LedgerDeps, spawn};
    use crate::actors::ledger_verify::{VerifyLimits, verify};
    use crate::storage::conformance as orders;
    use crate::storage::{CreateOutcome, EventLog, OrderRecords};
    use std::sync::Arc;
    use time::OffsetDateTime;
    let Ok(contact) = std::env::var(CQL_ENV) else {
        return;
    };
    let keyspace = format!("paycore_verify_lag_{}", std::process::id());
    let own = settings(&contact, keyspace.clone());
    let store = Arc::new(ScyllaStore::open(&own).await.unwrap());
    EventLog::register_cursor(&*store, CURSOR).await.unwrap();
    let verify_beside = || {
        let own = own.clone();
        async move {
            let reader = ScyllaStore::open_as(&own, super::Role::Reader)
                .await
                .unwrap();
            verify(&reader, &reader, VerifyLimits::default())
                .await
                .unwrap()
        }
    };
    let m = orders::merchant("vlag");
    let t = orders::token(&*store, &m, 60).await;
    let (order, created) = orders::new_order(&m, "V1");
    let now = OffsetDateTime::now_utc();
    let stored = store.create_order(t, order.clone(), created, vec![], now);
    assert_eq!(stored.await.unwrap(), CreateOutcome::Created);
    let (paying, events) = orders::paying(&order);
    store
        .update_order(paying.clone(), order.version, order.status, events, vec![])
        .await
        .unwrap();

    let report = verify_beside().await;
    assert!(report.passed(), "{report}");
    assert_eq!(
        (report.not_yet_booked, report.orders_checked),
        (1, 0),
        "{report}"
    );

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let deps = LedgerDeps {
        events: store.clone(),
        store: store.clone(),
        batch: 100,
        metrics: Arc::new(crate::metrics::Metrics::new()),
        commits: store.watch_events_committed(),
        linger: std::time::Duration::ZERO,
    };
    let tasks = spawn(deps, crate::streams::consumer::Health::default(), stopped);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store
        .order_ledger(&paying.order_id)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "never booked");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Past the run's clock margin: the order's change is older than the run.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let report = verify_beside().await;
    assert!(report.passed(), "{report}");
    assert_eq!(
        (report.not_yet_booked, report.orders_checked),
        (0, 1),
        "{report}"
    );

    // Stored and not logged (a crash between the two would leave it so): its intent says so.
    store
        .skip_logging
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut closed = paying.clone();
    let mut events = Vec::new();
    for c in paying
        .apply(
            &crate::domain::Command::MarkChannelClosed,
            OffsetDateTime::now_utc(),
        )
        .unwrap()
    {
        closed.on(&c);
        events.extend(crate::domain::Event::for_change(&closed, &c));
    }
    store
        .update_order(closed, paying.version, paying.status, events, vec![])
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let report = verify_beside().await;
    assert!(report.passed(), "{report}");
    assert_eq!(
        (report.not_yet_booked, report.orders_checked),
        (1, 0),
        "{report}"
    );

    stop.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    super::tests::drop_keyspace(&store, &keyspace).await;
}
