//! Notification storage against a real database file.

use super::*;
use crate::config::SqliteSettings;
use crate::domain::notification::{DEFAULT_NOTIFY_EVENTS, Subscription};
use crate::domain::{Event, OrderId};
use crate::metrics::Metrics;
use crate::storage::OrderStore;
use crate::storage::{EventLog, OrderRecords};
use std::sync::Arc;

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    let settings = SqliteSettings {
        path: dir.path().join("n.db").to_string_lossy().into_owned(),
        ..SqliteSettings::default()
    };
    SqliteStore::open(&settings, Arc::new(Metrics::new())).unwrap()
}

fn at(ms: i64) -> OffsetDateTime {
    from_ms(1_800_000_000_000 + ms)
}

/// A notification of `order` at `version` for `merchant`, due at `due_ms`.
fn row(merchant: &str, order: &OrderId, version: u64, due_ms: i64) -> Notification {
    let event = Event {
        event_id: EventId::generate(),
        event_type: "order.paid".into(),
        order_id: order.to_string(),
        merchant_id: merchant.into(),
        version,
        occurred_at: at(0),
        data: serde_json::json!({"notify_url": "https://m.example/n"}).into(),
    };
    let sub = Subscription {
        events: DEFAULT_NOTIFY_EVENTS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        default_url: None,
    };
    Notification::for_event(&event, &sub, at(due_ms)).unwrap()
}

fn room(per_merchant: usize, in_flight: &[(&str, usize)]) -> MerchantRoom {
    MerchantRoom {
        per_merchant,
        in_flight: in_flight
            .iter()
            .map(|(m, n)| (MerchantId::parse(m).unwrap(), *n))
            .collect(),
    }
}

fn ids(rows: &[Notification]) -> Vec<&NotificationId> {
    rows.iter().map(|n| &n.notification_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_is_idempotent_and_moves_the_cursor_with_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.register_cursor("notifier").await.unwrap(), vec![0]);
    let order = OrderId::generate();
    let n = row("m1", &order, 2, 0);
    store
        .enqueue_notifications(vec![n.clone()], "notifier", 0, 7)
        .await
        .unwrap();
    // Read again after a crash before the cursor moved: stored once, cursor never goes back.
    store
        .enqueue_notifications(vec![n.clone()], "notifier", 0, 5)
        .await
        .unwrap();
    assert_eq!(store.cursor("notifier", 0).await.unwrap(), 7);
    assert_eq!(store.register_cursor("notifier").await.unwrap(), vec![7]);
    let m1 = MerchantId::parse("m1").unwrap();
    let listed = store.notifications_for_order(&m1, &order).await.unwrap();
    assert_eq!(listed, vec![n]);
    let other = MerchantId::parse("m2").unwrap();
    assert!(
        store
            .notifications_for_order(&other, &order)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.pending_notifications().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_cursor_holds_the_purge_and_a_new_one_starts_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.register_cursor("notifier").await.unwrap();
    let token = crate::domain::SubmitToken::generate();
    store
        .issue_token(crate::storage::TokenRecord {
            token: token.clone(),
            merchant_id: MerchantId::parse("m1").unwrap(),
            expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(1),
        })
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let (order, change) = crate::domain::Order::create(
        OrderId::generate(),
        crate::domain::NewOrder::for_test("m1", "A", 100),
        now,
    );
    let events: Vec<Event> = Event::for_change(&order, &change).into_iter().collect();
    store
        .create_order(token, order, events, vec![], now)
        .await
        .unwrap();
    let seq = store.events_after(0, 0, 1).await.unwrap()[0].seq;
    store.set_cursor("relay", 0, seq).await.unwrap();
    let later = OffsetDateTime::now_utc() + time::Duration::seconds(1);
    assert_eq!(
        store.purge(later, later).await.unwrap(),
        0,
        "notifier not past it"
    );
    store.drop_cursor("notifier").await.unwrap();
    assert_eq!(store.purge(later, later).await.unwrap(), 1);
    // Switched on again: it starts after what was committed (and purged) meanwhile.
    assert_eq!(store.register_cursor("notifier").await.unwrap(), vec![seq]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_due_ordered_leased_bounded_per_merchant_and_in_version_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let (o1, o2, o3) = (
        OrderId::generate(),
        OrderId::generate(),
        OrderId::generate(),
    );
    let a1 = row("a", &o1, 2, 10);
    let a1_later = row("a", &o1, 4, 5); // due first, but an earlier version of o1 is pending
    let a2 = row("a", &o2, 2, 20);
    let b3 = row("b", &o3, 2, 30);
    let not_due = row("b", &OrderId::generate(), 2, 10_000);
    let all = vec![
        a1.clone(),
        a1_later.clone(),
        a2.clone(),
        b3.clone(),
        not_due.clone(),
    ];
    store
        .enqueue_notifications(all, "notifier", 0, 1)
        .await
        .unwrap();

    // Merchant a is saturated: only b's due one.
    let lease = at(60_000);
    let got = store
        .claim_due_notifications(at(100), lease, 10, &room(1, &[("a", 1)]))
        .await
        .unwrap();
    assert_eq!(ids(&got), vec![&b3.notification_id]);
    assert_eq!(got[0].next_attempt_at, at(30), "answered as it was due");
    // Leased: not claimed again before the lease runs out.
    let got = store
        .claim_due_notifications(at(100), lease, 10, &room(1, &[]))
        .await
        .unwrap();
    assert_eq!(
        ids(&got),
        vec![&a1.notification_id],
        "one for a: its room is 1"
    );
    let got = store
        .claim_due_notifications(at(100), lease, 10, &room(5, &[]))
        .await
        .unwrap();
    assert_eq!(ids(&got), vec![&a2.notification_id], "o1's v4 waits for v2");

    // v2 fails and is due again later; v4 still waits behind it.
    let retry = DeliveryOutcome::Retry {
        status: Some(500),
        error: "HTTP 500".into(),
        next_attempt_at: at(200),
        schedule_pos: 1,
    };
    store
        .record_delivery(&a1.notification_id, 0, retry, at(100))
        .await
        .unwrap();
    let got = store
        .claim_due_notifications(at(150), lease, 10, &room(5, &[]))
        .await
        .unwrap();
    assert!(got.is_empty(), "{got:?}");
    let got = store
        .claim_due_notifications(at(250), lease, 10, &room(5, &[]))
        .await
        .unwrap();
    assert_eq!(ids(&got), vec![&a1.notification_id]);
    assert_eq!((got[0].attempts, got[0].schedule_pos), (1, 1));
    assert_eq!(got[0].last_status, Some(500));

    // A late answer for an attempt already counted changes nothing.
    store
        .record_delivery(
            &a1.notification_id,
            0,
            DeliveryOutcome::Delivered { status: 200 },
            at(260),
        )
        .await
        .unwrap();
    let a = MerchantId::parse("a").unwrap();
    let listed = store.notifications_for_order(&a, &o1).await.unwrap();
    assert_eq!(listed[0].status, NotificationStatus::Pending);

    // Dead no longer blocks: v4 goes.
    let dead = DeliveryOutcome::Dead {
        status: None,
        error: "connection refused".into(),
    };
    store
        .record_delivery(&a1.notification_id, 1, dead, at(300))
        .await
        .unwrap();
    let got = store
        .claim_due_notifications(at(300), lease, 10, &room(5, &[]))
        .await
        .unwrap();
    assert_eq!(ids(&got), vec![&a1_later.notification_id]);
    let listed = store.notifications_for_order(&a, &o1).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|n| (n.version, n.status, n.attempts, n.last_status))
            .collect::<Vec<_>>(),
        vec![
            (2, NotificationStatus::Dead, 2, None),
            (4, NotificationStatus::Pending, 0, None)
        ]
    );
    assert_eq!(listed[0].last_error.as_deref(), Some("connection refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliver_restarts_a_finished_notification_of_its_merchant_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let order = OrderId::generate();
    let n = row("a", &order, 2, 0);
    let id = n.notification_id.clone();
    store
        .enqueue_notifications(vec![n], "notifier", 0, 1)
        .await
        .unwrap();
    let (a, b) = (
        MerchantId::parse("a").unwrap(),
        MerchantId::parse("b").unwrap(),
    );
    let lease = at(60_000);
    let got = store
        .claim_due_notifications(at(0), lease, 1, &room(1, &[]))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    // A pending one is answered as it is.
    let same = store.redeliver(&a, &id, at(10)).await.unwrap().unwrap();
    assert_eq!(same.next_attempt_at, lease);
    let dead = DeliveryOutcome::Dead {
        status: Some(404),
        error: "HTTP 404".into(),
    };
    store.record_delivery(&id, 0, dead, at(20)).await.unwrap();
    assert_eq!(store.pending_notifications().await.unwrap(), 0);
    assert!(store.redeliver(&b, &id, at(30)).await.unwrap().is_none());
    let again = store.redeliver(&a, &id, at(30)).await.unwrap().unwrap();
    assert_eq!(
        (
            again.status,
            again.attempts,
            again.schedule_pos,
            again.next_attempt_at
        ),
        (NotificationStatus::Pending, 1, 0, at(30))
    );
    let got = store
        .claim_due_notifications(at(30), lease, 1, &room(1, &[]))
        .await
        .unwrap();
    assert_eq!(ids(&got), vec![&id]);
}
