//! Conformance cases for `NotificationStore`, run on every backend: on SQLite always (the
//! tests at the end of this file), on the CQL backend when `PAYCORE_TEST_CQL` names a server
//! (`storage::scylla::notification_tests`). Each case uses merchants of its own and looks only
//! at their notifications, but a claim takes every due notification of its store: on a shared
//! store the cases run one after the other (counts are compared before and after).
//!
//! Times are the real clock's (a backend's due index may go by it), to the millisecond.

use super::conformance::merchant;
use super::{EventLog, MerchantRoom, NotificationStore};
use crate::domain::notification::{
    DEFAULT_NOTIFY_EVENTS, DeliveryOutcome, Notification, NotificationStatus, Subscription,
};
use crate::domain::{Event, EventId, MerchantId, NotificationId, OrderId};
use std::collections::HashSet;
use time::OffsetDateTime;

/// A time base for one case: now, to the millisecond.
pub fn base() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let ms = now.unix_timestamp_nanos() / 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).unwrap()
}

fn at(base: OffsetDateTime, ms: i64) -> OffsetDateTime {
    base + time::Duration::milliseconds(ms)
}

/// A notification of `order` at `version` for `merchant`, due at `due`.
pub fn row(merchant: &str, order: &OrderId, version: u64, due: OffsetDateTime) -> Notification {
    let event = Event {
        event_id: EventId::generate(),
        event_type: "order.paid".into(),
        order_id: order.to_string(),
        merchant_id: merchant.into(),
        version,
        occurred_at: due,
        data: serde_json::json!({"notify_url": "https://m.example/n"}).into(),
    };
    let sub = Subscription {
        events: DEFAULT_NOTIFY_EVENTS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        default_url: None,
    };
    Notification::for_event(&event, &sub, due).unwrap()
}

pub fn room(per_merchant: usize, in_flight: &[(&str, usize)]) -> MerchantRoom {
    MerchantRoom {
        per_merchant,
        in_flight: in_flight
            .iter()
            .map(|(m, n)| (MerchantId::parse(m).unwrap(), *n))
            .collect(),
    }
}

/// The ids of those of `merchants` (others' rows of a shared store left out), in claim order.
fn mine<'a>(rows: &'a [Notification], merchants: &[&str]) -> Vec<&'a NotificationId> {
    rows.iter()
        .filter(|n| merchants.contains(&n.merchant_id.as_str()))
        .map(|n| &n.notification_id)
        .collect()
}

fn mid(s: &str) -> MerchantId {
    MerchantId::parse(s).unwrap()
}

/// Enqueue stores each notification once, leaves a stored one as it is, and moves the cursor,
/// never back.
pub async fn enqueue_is_idempotent_and_moves_the_cursor(
    store: &dyn NotificationStore,
    log: &dyn EventLog,
) {
    let m = merchant("nq");
    let cursor = format!("notifier-{m}");
    let t = base();
    let before = store.pending_notifications().await.unwrap();
    let order = OrderId::generate();
    let n = row(&m, &order, 2, t);
    store
        .enqueue_notifications(vec![n.clone()], &cursor, 0, 7)
        .await
        .unwrap();
    assert_eq!(log.cursor(&cursor, 0).await.unwrap(), 7);
    // Read again after a crash before the cursor moved: stored once, cursor never goes back.
    let changed = Notification {
        url: "https://other.example/".into(),
        next_attempt_at: at(t, 5),
        ..n.clone()
    };
    store
        .enqueue_notifications(vec![changed], &cursor, 0, 5)
        .await
        .unwrap();
    assert_eq!(log.cursor(&cursor, 0).await.unwrap(), 7);
    store
        .enqueue_notifications(vec![], &cursor, 0, 9)
        .await
        .unwrap();
    assert_eq!(log.cursor(&cursor, 0).await.unwrap(), 9);
    let listed = store
        .notifications_for_order(&mid(&m), &order)
        .await
        .unwrap();
    assert_eq!(listed, vec![n]);
    let other = mid(&merchant("nq"));
    assert!(
        store
            .notifications_for_order(&other, &order)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store.pending_notifications().await.unwrap() > before,
        "the new one is pending"
    );
}

/// Claims: due first, leased, none of a saturated merchant, no more than a merchant's room,
/// one order's in version order; outcomes: retry, a stale answer ignored, dead no longer holds
/// the later version.
pub async fn claims_are_due_ordered_leased_bounded_and_in_version_order(
    store: &dyn NotificationStore,
) {
    let (a, b) = (merchant("ca"), merchant("cb"));
    let ours = [a.as_str(), b.as_str()];
    let t = base();
    let (o1, o2, o3) = (
        OrderId::generate(),
        OrderId::generate(),
        OrderId::generate(),
    );
    let a1 = row(&a, &o1, 2, at(t, 10));
    let a1_later = row(&a, &o1, 4, at(t, 5)); // due first, but an earlier version is pending
    let a2 = row(&a, &o2, 2, at(t, 20));
    let b3 = row(&b, &o3, 2, at(t, 30));
    let not_due = row(&b, &OrderId::generate(), 2, at(t, 10_000));
    let all = vec![
        a1.clone(),
        a1_later.clone(),
        a2.clone(),
        b3.clone(),
        not_due.clone(),
    ];
    let cursor = format!("notifier-{a}");
    store
        .enqueue_notifications(all, &cursor, 0, 1)
        .await
        .unwrap();

    // Merchant a is saturated: only b's due one.
    let lease = at(t, 60_000);
    let got = store
        .claim_due_notifications(at(t, 100), lease, 50, &room(1, &[(&a, 1)]))
        .await
        .unwrap();
    assert_eq!(mine(&got, &ours), vec![&b3.notification_id]);
    let b3_got = got.iter().find(|n| n.merchant_id.as_str() == b).unwrap();
    assert_eq!(b3_got.next_attempt_at, at(t, 30), "answered as it was due");
    // Leased: not claimed again before the lease runs out. One of a's: its room is 1.
    let got = store
        .claim_due_notifications(at(t, 100), lease, 50, &room(1, &[]))
        .await
        .unwrap();
    assert_eq!(mine(&got, &ours), vec![&a1.notification_id], "room of 1");
    let got = store
        .claim_due_notifications(at(t, 100), lease, 50, &room(5, &[]))
        .await
        .unwrap();
    assert_eq!(
        mine(&got, &ours),
        vec![&a2.notification_id],
        "o1's v4 waits for v2"
    );

    // v2 fails and is due again later; v4 still waits behind it.
    let retry = DeliveryOutcome::Retry {
        status: Some(500),
        error: "HTTP 500".into(),
        next_attempt_at: at(t, 200),
        schedule_pos: 1,
    };
    store
        .record_delivery(&a1.notification_id, 0, retry, at(t, 100))
        .await
        .unwrap();
    let got = store
        .claim_due_notifications(at(t, 150), lease, 50, &room(5, &[]))
        .await
        .unwrap();
    assert!(mine(&got, &ours).is_empty(), "{got:?}");
    let got = store
        .claim_due_notifications(at(t, 250), lease, 50, &room(5, &[]))
        .await
        .unwrap();
    assert_eq!(mine(&got, &ours), vec![&a1.notification_id]);
    let again = got.iter().find(|n| n.notification_id == a1.notification_id);
    let again = again.unwrap();
    assert_eq!((again.attempts, again.schedule_pos), (1, 1));
    assert_eq!(again.last_status, Some(500));
    assert_eq!(again.next_attempt_at, at(t, 200));

    // A late answer for an attempt already counted changes nothing.
    store
        .record_delivery(
            &a1.notification_id,
            0,
            DeliveryOutcome::Delivered { status: 200 },
            at(t, 260),
        )
        .await
        .unwrap();
    let listed = store.notifications_for_order(&mid(&a), &o1).await.unwrap();
    assert_eq!(
        (
            listed[0].status,
            listed[0].attempts,
            listed[0].next_attempt_at
        ),
        (NotificationStatus::Pending, 1, lease)
    );

    // Dead no longer holds the later version: v4 goes at once.
    let dead = DeliveryOutcome::Dead {
        status: None,
        error: "connection refused".into(),
    };
    store
        .record_delivery(&a1.notification_id, 1, dead, at(t, 300))
        .await
        .unwrap();
    let got = store
        .claim_due_notifications(at(t, 300), lease, 50, &room(5, &[]))
        .await
        .unwrap();
    assert_eq!(mine(&got, &ours), vec![&a1_later.notification_id]);
    let listed = store.notifications_for_order(&mid(&a), &o1).await.unwrap();
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
    assert_eq!(listed[1].next_attempt_at, lease, "leased");
}

/// Delivered ends a notification; redeliver makes a finished one PENDING again from the start
/// of the schedule, for its own merchant only, and answers a PENDING one as it is.
pub async fn delivered_dead_and_redelivered_for_its_merchant_only(store: &dyn NotificationStore) {
    let (a, b) = (merchant("ra"), merchant("rb"));
    let ours = [a.as_str()];
    let t = base();
    let before = store.pending_notifications().await.unwrap();
    let order = OrderId::generate();
    let n = row(&a, &order, 2, t);
    let id = n.notification_id.clone();
    store
        .enqueue_notifications(vec![n], &format!("notifier-{a}"), 0, 1)
        .await
        .unwrap();
    let lease = at(t, 60_000);
    let got = store
        .claim_due_notifications(at(t, 0), lease, 50, &room(1, &[]))
        .await
        .unwrap();
    assert_eq!(mine(&got, &ours), vec![&id]);
    // A pending one is answered as it is.
    let same = store.redeliver(&mid(&a), &id, at(t, 10)).await.unwrap();
    assert_eq!(same.unwrap().next_attempt_at, lease);
    let dead = DeliveryOutcome::Dead {
        status: Some(404),
        error: "HTTP 404".into(),
    };
    store
        .record_delivery(&id, 0, dead, at(t, 20))
        .await
        .unwrap();
    assert_eq!(store.pending_notifications().await.unwrap(), before);
    assert!(
        store
            .redeliver(&mid(&b), &id, at(t, 30))
            .await
            .unwrap()
            .is_none()
    );
    let unknown = NotificationId::for_event(&EventId::generate());
    assert!(
        store
            .redeliver(&mid(&a), &unknown, at(t, 30))
            .await
            .unwrap()
            .is_none()
    );
    let again = store.redeliver(&mid(&a), &id, at(t, 30)).await.unwrap();
    let again = again.unwrap();
    assert_eq!(
        (
            again.status,
            again.attempts,
            again.schedule_pos,
            again.next_attempt_at,
            again.last_status
        ),
        (NotificationStatus::Pending, 1, 0, at(t, 30), Some(404))
    );
    assert_eq!(store.pending_notifications().await.unwrap(), before + 1);
    let got = store
        .claim_due_notifications(at(t, 30), lease, 50, &room(1, &[]))
        .await
        .unwrap();
    assert_eq!(mine(&got, &ours), vec![&id]);
    store
        .record_delivery(
            &id,
            1,
            DeliveryOutcome::Delivered { status: 204 },
            at(t, 40),
        )
        .await
        .unwrap();
    // A second answer for the same attempt: already counted, ignored.
    let late = DeliveryOutcome::Dead {
        status: None,
        error: "late".into(),
    };
    store
        .record_delivery(&id, 1, late, at(t, 50))
        .await
        .unwrap();
    let listed = store
        .notifications_for_order(&mid(&a), &order)
        .await
        .unwrap();
    assert_eq!(
        (listed[0].status, listed[0].attempts, listed[0].last_status),
        (NotificationStatus::Delivered, 2, Some(204))
    );
    assert_eq!(listed[0].last_error, None);
    assert_eq!(store.pending_notifications().await.unwrap(), before);
    let got = store
        .claim_due_notifications(at(t, 70_000), at(t, 130_000), 50, &room(5, &[]))
        .await
        .unwrap();
    assert!(mine(&got, &ours).is_empty(), "delivered: never claimed");
    // Delivered is redelivered too.
    let third = store.redeliver(&mid(&a), &id, at(t, 80)).await.unwrap();
    assert_eq!(third.unwrap().status, NotificationStatus::Pending);
}

/// Two claimers at once (on `one` and `other`, which may be the same store) never get the same
/// notification, and between them get every due one.
pub async fn concurrent_claimers_never_share(
    one: &dyn NotificationStore,
    other: &dyn NotificationStore,
) {
    let m = merchant("cc");
    let ours = [m.as_str()];
    let t = base();
    let rows: Vec<Notification> = (0..24)
        .map(|i| row(&m, &OrderId::generate(), 2, at(t, i)))
        .collect();
    let all: HashSet<NotificationId> = rows.iter().map(|n| n.notification_id.clone()).collect();
    one.enqueue_notifications(rows, &format!("notifier-{m}"), 0, 1)
        .await
        .unwrap();
    let lease = at(t, 60_000);
    let wide = room(100, &[]);
    let mut seen = HashSet::new();
    for _ in 0..4 {
        let (x, y) = tokio::join!(
            one.claim_due_notifications(at(t, 100), lease, 8, &wide),
            other.claim_due_notifications(at(t, 100), lease, 8, &wide),
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        for id in mine(&x, &ours).into_iter().chain(mine(&y, &ours)) {
            assert!(seen.insert(id.clone()), "{id} claimed twice");
        }
    }
    assert_eq!(seen, all, "every due one claimed, once");
}

mod sqlite {
    use crate::config::SqliteSettings;
    use crate::metrics::Metrics;
    use crate::storage::sqlite::SqliteStore;
    use std::sync::Arc;

    fn open(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
        let settings = SqliteSettings {
            path: dir.path().join("n.db").to_string_lossy().into_owned(),
            ..SqliteSettings::default()
        };
        Arc::new(SqliteStore::open(&settings, Arc::new(Metrics::new())).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn enqueue_is_idempotent_and_moves_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        super::enqueue_is_idempotent_and_moves_the_cursor(s.as_ref(), s.as_ref()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_are_due_ordered_leased_bounded_and_in_version_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        super::claims_are_due_ordered_leased_bounded_and_in_version_order(s.as_ref()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delivered_dead_and_redelivered_for_its_merchant_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        super::delivered_dead_and_redelivered_for_its_merchant_only(s.as_ref()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claimers_never_share() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        super::concurrent_claimers_never_share(s.as_ref(), s.as_ref()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn all_cases_one_after_the_other_on_one_store() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        super::enqueue_is_idempotent_and_moves_the_cursor(s.as_ref(), s.as_ref()).await;
        super::claims_are_due_ordered_leased_bounded_and_in_version_order(s.as_ref()).await;
        super::delivered_dead_and_redelivered_for_its_merchant_only(s.as_ref()).await;
        super::concurrent_claimers_never_share(s.as_ref(), s.as_ref()).await;
    }
}
