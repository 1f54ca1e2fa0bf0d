//! The SQLite store against a real database file in a temp directory.

use super::*;
use crate::config::SqliteSettings;
use crate::domain::*;
use crate::storage::EventLog;
use time::Duration as TDuration;

fn settings(dir: &tempfile::TempDir) -> SqliteSettings {
    SqliteSettings {
        path: dir.path().join("t.db").to_string_lossy().into_owned(),
        ..SqliteSettings::default()
    }
}

fn new_order(merchant: &str, no: &str) -> (Order, Vec<Event>) {
    let new = NewOrder::for_test(merchant, no, 500);
    let (order, change) = Order::create(OrderId::generate(), new, OffsetDateTime::now_utc());
    let events = Event::for_change(&order, &change).into_iter().collect();
    (order, events)
}

async fn token(store: &SqliteStore, merchant: &str, ttl_secs: i64) -> SubmitToken {
    let t = SubmitToken::generate();
    store
        .issue_token(TokenRecord {
            token: t.clone(),
            merchant_id: MerchantId::parse(merchant).unwrap(),
            expires_at: OffsetDateTime::now_utc() + TDuration::seconds(ttl_secs),
        })
        .await
        .unwrap();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_consumes_token_once_and_rejects_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&settings(&dir), Arc::new(Metrics::new())).unwrap();
    let now = OffsetDateTime::now_utc();
    let t = token(&store, "m1", 60).await;

    let (o1, e1) = new_order("m1", "A");
    assert_eq!(
        store
            .create_order(t.clone(), o1.clone(), e1, vec![], now)
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    let (o2, e2) = new_order("m1", "B");
    assert_eq!(
        store
            .create_order(t.clone(), o2.clone(), e2, vec![], now)
            .await
            .unwrap(),
        CreateOutcome::TokenUsed(Some(o1.order_id.clone()))
    );
    assert!(
        store.load_order(&o2.order_id).await.unwrap().is_none(),
        "refused create stores nothing"
    );

    // Same merchant number with a fresh token: duplicate, and the token stays unused.
    let t2 = token(&store, "m1", 60).await;
    let (o3, e3) = new_order("m1", "A");
    assert_eq!(
        store
            .create_order(t2.clone(), o3, e3, vec![], now)
            .await
            .unwrap(),
        CreateOutcome::Duplicate(o1.order_id.clone())
    );
    let (o4, e4) = new_order("m1", "C");
    assert_eq!(
        store.create_order(t2, o4, e4, vec![], now).await.unwrap(),
        CreateOutcome::Created
    );

    // Another merchant's token, an unknown token and an expired token are invalid.
    let foreign = token(&store, "m2", 60).await;
    let (o5, e5) = new_order("m1", "D");
    assert_eq!(
        store
            .create_order(foreign, o5.clone(), e5.clone(), vec![], now)
            .await
            .unwrap(),
        CreateOutcome::TokenInvalid
    );
    assert_eq!(
        store
            .create_order(SubmitToken::generate(), o5.clone(), e5.clone(), vec![], now)
            .await
            .unwrap(),
        CreateOutcome::TokenInvalid
    );
    let expired = token(&store, "m1", -1).await;
    assert_eq!(
        store
            .create_order(expired, o5, e5, vec![], now)
            .await
            .unwrap(),
        CreateOutcome::TokenInvalid
    );

    assert_eq!(
        store.load_order(&o1.order_id).await.unwrap(),
        Some(o1.clone())
    );
    let found = store
        .find_by_merchant_order_no(&o1.merchant_id, &o1.merchant_order_no)
        .await
        .unwrap()
        .map(|o| o.order_id);
    assert_eq!(found, Some(o1.order_id));
    assert_eq!(
        store.status_counts().await.unwrap(),
        vec![(OrderStatus::Created, 2)]
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uses_of_one_token_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&settings(&dir), Arc::new(Metrics::new())).unwrap());
    let t = token(&store, "m1", 60).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (store, t) = (store.clone(), t.clone());
            tokio::spawn(async move {
                let (o, e) = new_order("m1", &format!("N{i}"));
                store
                    .create_order(t, o, e, vec![], OffsetDateTime::now_utc())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            CreateOutcome::Created => created += 1,
            CreateOutcome::TokenUsed(Some(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(
        store.status_counts().await.unwrap(),
        vec![(OrderStatus::Created, 1)]
    );
}

/// A write refused after it changed rows (here an order id taken by another order, found only
/// when the order row is inserted, after its token was consumed) is undone alone, whatever else
/// commits in its batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_after_it_changed_rows_is_undone_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&settings(&dir), Arc::new(Metrics::new())).unwrap());
    let (first, events) = new_order("m1", "FIRST");
    let t = token(&store, "m1", 60).await;
    let now = OffsetDateTime::now_utc();
    assert_eq!(
        store
            .create_order(t, first.clone(), events, vec![], now)
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    let collider_token = token(&store, "m1", 60).await;
    let mut tokens = Vec::new();
    for _ in 0..40 {
        tokens.push(token(&store, "m1", 60).await);
    }
    let mut tasks = Vec::new();
    for (i, t) in tokens.into_iter().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let (o, e) = new_order("m1", &format!("N{i}"));
            store.create_order(t, o, e, vec![], now).await
        }));
    }
    let (mut collider, events) = new_order("m1", "COLLIDER");
    collider.order_id = first.order_id.clone();
    let refused = store
        .create_order(collider_token.clone(), collider, events, vec![], now)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Backend(ref e)) if e.contains("collision")),
        "{refused:?}"
    );
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), CreateOutcome::Created);
    }
    // The collider's token was not consumed: it admits another order.
    let (again, events) = new_order("m1", "AGAIN");
    assert_eq!(
        store
            .create_order(collider_token, again, events, vec![], now)
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(
        store.load_order(&first.order_id).await.unwrap(),
        Some(first)
    );
    assert_eq!(
        store.status_counts().await.unwrap(),
        vec![(OrderStatus::Created, 42)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_checks_version_and_keeps_counts_and_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&settings(&dir), Arc::new(Metrics::new())).unwrap();
    let t = token(&store, "m1", 60).await;
    let (mut o, e) = new_order("m1", "A");
    store
        .create_order(t, o.clone(), e, vec![], OffsetDateTime::now_utc())
        .await
        .unwrap();

    let cmd = Command::MarkPaying {
        pay_serial_no: PaySerialNo::generate(),
        pay_method: PayMethod::Native,
        channel_payload: serde_json::json!({}),
        channel_trade_no: None,
    };
    let prev = o.clone();
    let mut events = Vec::new();
    for c in o.apply(&cmd, OffsetDateTime::now_utc()).unwrap() {
        o.on(&c);
        events.extend(Event::for_change(&o, &c));
    }
    store
        .update_order(o.clone(), prev.version, prev.status, events.clone(), vec![])
        .await
        .unwrap();
    // A second writer still holding version 1 loses.
    let stale = store
        .update_order(o.clone(), prev.version, prev.status, events, vec![])
        .await;
    assert!(
        matches!(stale, Err(StoreError::VersionConflict(_))),
        "{stale:?}"
    );

    assert_eq!(
        store.load_order(&o.order_id).await.unwrap().unwrap().status,
        OrderStatus::Paying
    );
    assert_eq!(
        store.status_counts().await.unwrap(),
        vec![(OrderStatus::Created, 0), (OrderStatus::Paying, 1)]
    );
    let outbox = store.events_after(0, 0, 10).await.unwrap();
    let types: Vec<_> = outbox
        .iter()
        .map(|e| (e.event.event_type.as_str(), e.event.version))
        .collect();
    assert_eq!(types, vec![("order.created", 1), ("order.paying", 2)]);
    assert!(outbox[0].seq < outbox[1].seq);
    assert_eq!(
        store
            .events_after(0, outbox[0].seq, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<OrderId> = {
        let store = SqliteStore::open(&settings(&dir), Arc::new(Metrics::new())).unwrap();
        let mut ids = Vec::new();
        for i in 0..20 {
            let t = token(&store, "m1", 60).await;
            let (o, e) = new_order("m1", &format!("R{i}"));
            ids.push(o.order_id.clone());
            store
                .create_order(t, o, e, vec![], OffsetDateTime::now_utc())
                .await
                .unwrap();
        }
        store.set_cursor("relay", 0, 7).await.unwrap();
        // No close: the store is dropped as a crash would leave it (the writer thread is
        // detached, nothing flushes on drop beyond what commits already made durable).
        std::mem::forget(store);
        ids
    };
    let store = SqliteStore::open(&settings(&dir), Arc::new(Metrics::new())).unwrap();
    for id in &ids {
        assert!(store.load_order(id).await.unwrap().is_some(), "{id} lost");
    }
    assert_eq!(store.cursor("relay", 0).await.unwrap(), 7);
    store.set_cursor("relay", 0, 3).await.unwrap();
    assert_eq!(
        store.cursor("relay", 0).await.unwrap(),
        7,
        "cursors never move back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_expired_tokens_and_only_delivered_old_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&settings(&dir), Arc::new(Metrics::new())).unwrap();
    let _old = token(&store, "m1", -3_601).await;
    // Expired, but within the hour its row is kept: a used token stays refused by its row
    // even if the clock steps back.
    let _recent = token(&store, "m1", -10).await;
    let t = token(&store, "m1", 60).await;
    let (o, e) = new_order("m1", "A");
    store
        .create_order(t, o, e, vec![], OffsetDateTime::now_utc())
        .await
        .unwrap();
    let later = OffsetDateTime::now_utc() + TDuration::seconds(1);
    // No cursor has passed the event yet: only the token expired over an hour ago goes.
    assert_eq!(
        store.purge(OffsetDateTime::now_utc(), later).await.unwrap(),
        1
    );
    let seq = store.events_after(0, 0, 1).await.unwrap()[0].seq;
    store.set_cursor("relay", 0, seq).await.unwrap();
    assert_eq!(
        store.purge(OffsetDateTime::now_utc(), later).await.unwrap(),
        1
    );
    assert!(store.events_after(0, 0, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_close_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&settings(&dir), Arc::new(Metrics::new())).unwrap();
    store.close().await;
    assert!(matches!(
        store.set_cursor("x", 0, 1).await,
        Err(StoreError::Closed)
    ));
    assert!(store.ping().await.is_err());
}

/// With the disk full every write fails, and `ping` (what /readyz asks) says so, instead of
/// answering from a read-only connection that still works; once space is back it recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_fails_while_writes_fail_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&settings(&dir), Arc::new(Metrics::new())).unwrap();
    store.ping().await.unwrap();
    store.simulate_full_disk(true).await;
    let mut failed = false;
    for _ in 0..20_000 {
        let r = store
            .issue_token(TokenRecord {
                token: SubmitToken::generate(),
                merchant_id: MerchantId::parse("m").unwrap(),
                expires_at: OffsetDateTime::now_utc() + TDuration::seconds(60),
            })
            .await;
        if r.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "a capped database must refuse writes");
    assert!(store.ping().await.is_err(), "not ready while writes fail");
    store.simulate_full_disk(false).await;
    store
        .ping()
        .await
        .expect("ready again once a write commits");
}

/// Writes that arrive within `commit_interval_us` of a commit's start wait and share the next
/// commit: one fsync for all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_within_the_commit_interval_share_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let s = SqliteSettings {
        commit_interval_us: 500_000,
        ..settings(&dir)
    };
    let store = Arc::new(SqliteStore::open(&s, metrics.clone()).unwrap());
    token(&store, "m1", 60).await;
    assert_eq!(metrics.storage_batch_writes.get_sample_count(), 1);
    let writes: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { token(&store, "m1", 60).await })
        })
        .collect();
    for w in writes {
        w.await.unwrap();
    }
    assert_eq!(
        metrics.storage_batch_writes.get_sample_count(),
        2,
        "the eight writes made one commit"
    );
    assert_eq!(metrics.storage_batch_writes.get_sample_sum(), 9.0);
    assert_eq!(
        metrics
            .storage_writes
            .with_label_values(&["issue_token"])
            .get(),
        9
    );
}

/// A write that finds the writer idle for longer than the interval commits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_an_idle_interval_commits_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteSettings {
        commit_interval_us: 2_000_000,
        ..settings(&dir)
    };
    let store = SqliteStore::open(&s, Arc::new(Metrics::new())).unwrap();
    token(&store, "m1", 60).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let started = std::time::Instant::now();
    token(&store, "m1", 60).await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1_000),
        "waited {:?}",
        started.elapsed()
    );
}
