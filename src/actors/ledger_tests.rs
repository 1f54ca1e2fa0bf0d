//! The ledger consumer against a real store: it books what is committed, passes over an event
//! it cannot book (counted), and `verify` judges lag by the cursor: an order with events after
//! it is not yet booked, not failed.

use super::*;
use crate::actors::ledger_verify::{VerifyLimits, verify};
use crate::config::SqliteSettings;
use crate::domain::{
    Command, Event, EventId, MerchantId, NewOrder, Order, OrderId, OrderStatus, PayMethod,
    PaySerialNo, SubmitToken,
};
use crate::storage::TokenRecord;
use crate::storage::sqlite::SqliteStore;
use crate::storage::{EventLog, OrderRecords};
use std::time::Duration;
use time::OffsetDateTime;

fn open(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    let s = SqliteSettings {
        path: dir.path().join("c.db").to_string_lossy().into_owned(),
        ..SqliteSettings::default()
    };
    Arc::new(SqliteStore::open(&s, Arc::new(Metrics::new())).unwrap())
}

/// Stores a new order and takes it to PAYING; answers it.
async fn paying_order(store: &SqliteStore, no: &str) -> Order {
    let now = OffsetDateTime::now_utc();
    let token = SubmitToken::generate();
    store
        .issue_token(TokenRecord {
            token: token.clone(),
            merchant_id: MerchantId::parse("demo").unwrap(),
            expires_at: now + time::Duration::minutes(5),
        })
        .await
        .unwrap();
    let (mut o, created) = Order::create(
        OrderId::generate(),
        NewOrder::for_test("demo", no, 700),
        now,
    );
    let events = Event::for_change(&o, &created).into_iter().collect();
    store
        .create_order(token, o.clone(), events, vec![], now)
        .await
        .unwrap();
    let prev = o.clone();
    let mut events = Vec::new();
    let cmd = Command::MarkPaying {
        pay_serial_no: PaySerialNo::generate(),
        pay_method: PayMethod::Native,
        channel_payload: serde_json::json!({}),
        channel_trade_no: None,
    };
    for c in o.apply(&cmd, now).unwrap() {
        o.on(&c);
        events.extend(Event::for_change(&o, &c));
    }
    store
        .update_order(o.clone(), prev.version, prev.status, events, vec![])
        .await
        .unwrap();
    o
}

async fn wait_cursor(store: &SqliteStore, at_least: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.cursor(CURSOR, 0).await.unwrap() < at_least {
        assert!(
            std::time::Instant::now() < deadline,
            "the ledger never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_books_what_is_committed_and_verify_judges_lag_by_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let cursor = EventLog::register_cursor(&*store, CURSOR).await.unwrap();
    assert_eq!(cursor, vec![0]);
    let order = paying_order(&store, "C1").await;

    // Nothing booked yet: the order is behind the cursor, which is no failure.
    let report = verify(&*store, &*store, VerifyLimits::default())
        .await
        .unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!((report.not_yet_booked, report.orders_checked), (1, 0));
    assert_eq!(
        report.not_yet_booked_listed,
        vec![order.order_id.to_string()]
    );

    let metrics = Arc::new(Metrics::new());
    let (stop, stopped) = watch::channel(false);
    let deps = LedgerDeps {
        events: store.clone(),
        store: store.clone(),
        batch: 1,
        metrics: metrics.clone(),
        commits: store.watch_events_committed(),
        linger: std::time::Duration::ZERO,
    };
    let task = joined(spawn(deps, Health::default(), stopped));
    wait_cursor(&store, 2).await;
    let booked = store.order_ledger(&order.order_id).await.unwrap();
    assert_eq!(booked.len(), 1);
    assert_eq!(booked[0].txn.kind(), crate::domain::ledger::TxnKind::Hold);
    let report = verify(&*store, &*store, VerifyLimits::default())
        .await
        .unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!((report.not_yet_booked, report.orders_checked), (0, 1));

    // An event the ledger cannot book (its data is not an order view) is passed over and
    // counted; the next ones are booked as ever.
    let mut bad = Event::for_change(
        &order,
        &crate::domain::Change {
            kind: crate::domain::ChangeKind::Closed,
            version: order.version + 1,
            at: OffsetDateTime::now_utc(),
        },
    )
    .unwrap();
    bad.event_id = EventId::generate();
    bad.data = serde_json::json!({"not": "a view"}).into();
    let mut closed = order.clone();
    closed.status = OrderStatus::Closed;
    closed.version += 1;
    store
        .update_order(closed, order.version, order.status, vec![bad], vec![])
        .await
        .unwrap();
    let second = paying_order(&store, "C2").await;
    wait_cursor(&store, 5).await;
    assert_eq!(metrics.ledger_rejected.get(), 1);
    assert_eq!(metrics.ledger_transactions.get(), 2);
    assert_eq!(metrics.ledger_postings.get(), 4);
    assert_eq!(metrics.ledger_cursor.get(), 5);
    assert_eq!(store.order_ledger(&second.order_id).await.unwrap().len(), 1);
    // The first order is CLOSED with its hold never voided: verify names it.
    let report = verify(&*store, &*store, VerifyLimits::default())
        .await
        .unwrap();
    assert!(!report.passed());
    assert_eq!(report.failures, 1, "{report}");
    assert!(
        report.failures_listed[0].contains("merchant_pending holds 700"),
        "{report}"
    );

    // Stopped by the signal.
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the consumer stops")
        .unwrap();

    // Told to stop before it even starts, a consumer still books what is committed first.
    let third = paying_order(&store, "C3").await;
    let (_, stopped) = watch::channel(true);
    let deps = LedgerDeps {
        events: store.clone(),
        store: store.clone(),
        batch: 1,
        metrics: Arc::new(Metrics::new()),
        commits: store.watch_events_committed(),
        linger: std::time::Duration::ZERO,
    };
    tokio::time::timeout(
        Duration::from_secs(5),
        joined(spawn(deps, Health::default(), stopped)),
    )
    .await
    .expect("the consumer stops")
    .unwrap();
    assert_eq!(store.cursor(CURSOR, 0).await.unwrap(), 7);
    assert_eq!(store.order_ledger(&third.order_id).await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_id_stored_with_other_content_stops_the_ledger_there() {
    use crate::domain::ledger::{Account, AccountKind, Posting, TxnKind, TxnParts, txn_id};
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    EventLog::register_cursor(&*store, CURSOR).await.unwrap();
    paying_order(&store, "X1").await;
    // The id the consumer derives for the order's hold, stored already with other content
    // (under another order, so the order's own book does not see it).
    let paying = store.events_after(0, 0, 10).await.unwrap()[1].event.clone();
    assert_eq!(paying.event_type, "order.paying");
    let leg =
        |kind, owner: &str, amount| Posting::new(Account::new(kind, owner).unwrap(), "CNY", amount);
    let squatter = LedgerTxn::new(TxnParts {
        id: txn_id(paying.event_id.as_str(), 0),
        order_id: OrderId::generate().to_string(),
        merchant_id: "demo".into(),
        event_id: paying.event_id.to_string(),
        kind: TxnKind::Hold,
        resolves: None,
        reference: None,
        postings: vec![
            leg(AccountKind::ChannelPending, "sim", -1),
            leg(AccountKind::MerchantPending, "demo", 1),
        ],
    })
    .unwrap();
    store
        .write_batch(vec![squatter], "other", 0, 0)
        .await
        .unwrap();

    let metrics = Arc::new(Metrics::new());
    let (stop, stopped) = watch::channel(false);
    let deps = LedgerDeps {
        events: store.clone(),
        store: store.clone(),
        batch: 10,
        metrics: metrics.clone(),
        commits: store.watch_events_committed(),
        linger: std::time::Duration::ZERO,
    };
    let task = joined(spawn(deps, Health::default(), stopped));
    // It retries (every RETRY_PAUSE) and never passes the conflict over.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(store.cursor(CURSOR, 0).await.unwrap(), 0);
    assert_eq!(metrics.ledger_batches.get(), 0);
    assert_eq!(metrics.ledger_rejected.get(), 0);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the consumer stops")
        .unwrap();
    assert_eq!(store.cursor(CURSOR, 0).await.unwrap(), 0);
    store.close().await;
}

/// With a linger, the ledger waits after a commit wakes it, and then books every commit of
/// that time in one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_ledger_books_several_commits_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    EventLog::register_cursor(&*store, CURSOR).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let (stop, stopped) = watch::channel(false);
    let deps = LedgerDeps {
        events: store.clone(),
        store: store.clone(),
        batch: 100,
        metrics: metrics.clone(),
        commits: store.watch_events_committed(),
        linger: Duration::from_millis(1_000),
    };
    let task = joined(spawn(deps, Health::default(), stopped));
    // Its first read (of nothing) is done before the orders come.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for no in ["L1", "L2", "L3"] {
        paying_order(&store, no).await;
    }
    wait_cursor(&store, 6).await;
    assert_eq!(metrics.ledger_batches.get(), 1, "six commits, one batch");
    assert_eq!(metrics.ledger_transactions.get(), 3);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the consumer stops")
        .unwrap();
    store.close().await;
}

/// Waits for every loop a spawn started (one per log partition).
async fn joined(tasks: Vec<tokio::task::JoinHandle<()>>) -> Result<(), tokio::task::JoinError> {
    for task in tasks {
        task.await?;
    }
    Ok(())
}
