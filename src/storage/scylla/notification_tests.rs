//! The notification conformance cases against a real CQL server (`PAYCORE_TEST_CQL`, as in
//! `tests`). A claim takes every due notification of its keyspace, so the cases run one after
//! the other in a keyspace of their own, made for this run and dropped after it.

use super::ScyllaStore;
use crate::config::scylla::ScyllaSettings;
use crate::storage::conformance_notifications as suite;

use super::tests::CQL_ENV;

fn settings(contact: &str, keyspace: String) -> ScyllaSettings {
    ScyllaSettings {
        keyspace,
        ..super::tests::settings(contact)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_conform() {
    let Ok(contact) = std::env::var(CQL_ENV) else {
        eprintln!("{CQL_ENV} is not set: the CQL notification tests did not run");
        return;
    };
    let base = std::env::var("PAYCORE_TEST_CQL_KEYSPACE").unwrap_or_else(|_| "paycore".into());
    let keyspace = format!("{base}_{}", std::process::id());
    let own = settings(&contact, keyspace.clone());
    let store = std::sync::Arc::new(ScyllaStore::open(&own).await.unwrap());
    let cases = {
        let store = store.clone();
        tokio::spawn(async move {
            lwt_rounds_per_operation(store.as_ref()).await;
            a_due_entry_without_its_row_is_dropped(store.as_ref()).await;
            a_due_entry_ahead_of_its_row_is_kept_for_it(store.as_ref()).await;
            suite::enqueue_is_idempotent_and_moves_the_cursor(store.as_ref(), store.as_ref()).await;
            suite::claims_are_due_ordered_leased_bounded_and_in_version_order(store.as_ref()).await;
            suite::delivered_dead_and_redelivered_for_its_merchant_only(store.as_ref()).await;
            // Two stores on the keyspace: two claimers racing through their own sessions.
            let second = ScyllaStore::open(&own).await.unwrap();
            suite::concurrent_claimers_never_share(store.as_ref(), &second).await;
        })
    };
    // The keyspace is dropped whatever the cases came to.
    let outcome = cases.await;
    super::tests::drop_keyspace(&store, &keyspace).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    eprintln!("CQL notification suite: ran against {contact} in {keyspace}");
}

/// An enqueue cut short after the due entry and before the row: the entry counts as pending
/// until a claim reaches it. While it is young (its row insert may not have answered yet) a
/// claim passes it over and keeps it; once past the grace, a claim finds no row, takes
/// nothing and deletes it.
async fn a_due_entry_without_its_row_is_dropped(store: &ScyllaStore) {
    use crate::domain::{OrderId, notification::NotificationStatus};
    use crate::storage::NotificationStore;
    let m = crate::storage::conformance::merchant("ghost");
    let t = suite::base();
    let before = store.pending_notifications().await.unwrap();
    let ghost = suite::row(&m, &OrderId::generate(), 2, t);
    store.index_notification_only(&ghost).await.unwrap();
    assert_eq!(store.pending_notifications().await.unwrap(), before + 1);
    let lease = t + time::Duration::minutes(1);
    for grace in [None, Some(std::time::Duration::ZERO)] {
        store.set_index_grace(grace);
        let got = store
            .claim_due_notifications(t, lease, 50, &suite::room(5, &[]))
            .await
            .unwrap();
        assert!(
            got.iter()
                .all(|n| n.notification_id != ghost.notification_id)
        );
        assert!(got.iter().all(|n| n.status == NotificationStatus::Pending));
        let kept = usize::from(grace.is_none());
        assert_eq!(
            store.pending_notifications().await.unwrap(),
            before + kept as i64,
            "grace {grace:?}"
        );
    }
    store.set_index_grace(None);
}

/// The race of an enqueue with a claim: the due entry is written, a claim reads it before the
/// row insert has answered (no row yet), then the row lands. The claim leaves the young entry,
/// so the next claim takes the notification; had it deleted the entry, the row would stay
/// PENDING and never be sent.
async fn a_due_entry_ahead_of_its_row_is_kept_for_it(store: &ScyllaStore) {
    use crate::domain::OrderId;
    use crate::storage::NotificationStore;
    let m = crate::storage::conformance::merchant("ahead");
    let t = suite::base();
    let n = suite::row(&m, &OrderId::generate(), 2, t);
    store.index_notification_only(&n).await.unwrap();
    let lease = t + time::Duration::minutes(1);
    let room = suite::room(5, &[]);
    let got = store
        .claim_due_notifications(t, lease, 50, &room)
        .await
        .unwrap();
    assert!(got.iter().all(|g| g.notification_id != n.notification_id));
    store.store_notification_row_only(&n).await.unwrap();
    let got = store
        .claim_due_notifications(t, lease, 50, &room)
        .await
        .unwrap();
    let taken = got
        .iter()
        .filter(|g| g.notification_id == n.notification_id)
        .count();
    assert_eq!(taken, 1, "taken once its row is there: {got:?}");
}

/// Run first, in the fresh keyspace: an enqueue is an LWT per notification and one for the
/// cursor, a claim one per notification taken, an outcome one.
async fn lwt_rounds_per_operation(store: &ScyllaStore) {
    use crate::domain::OrderId;
    use crate::domain::notification::DeliveryOutcome;
    use crate::storage::{EventLog, NotificationStore};
    let m = crate::storage::conformance::merchant("rounds");
    let cursor = format!("notifier-{m}");
    store.set_cursor(&cursor, 3, 1).await.unwrap();
    let t = suite::base();
    let n = suite::row(&m, &OrderId::generate(), 2, t);
    let lwt = || store.counts.get().0;
    let start = lwt();
    store
        .enqueue_notifications(vec![n.clone()], &cursor, 3, 2)
        .await
        .unwrap();
    assert_eq!(lwt() - start, 2, "the row and the cursor");
    assert_eq!(store.cursor(&cursor, 3).await.unwrap(), 2);
    let start = lwt();
    let lease = t + time::Duration::minutes(1);
    let got = store
        .claim_due_notifications(t, lease, 10, &suite::room(5, &[]))
        .await
        .unwrap();
    assert_eq!(got, vec![n.clone()]);
    assert_eq!(lwt() - start, 1, "the lease");
    let start = lwt();
    let delivered = DeliveryOutcome::Delivered { status: 200 };
    store
        .record_delivery(&n.notification_id, 0, delivered, t)
        .await
        .unwrap();
    assert_eq!(lwt() - start, 1, "the outcome");
    assert_eq!(store.pending_notifications().await.unwrap(), 0);
}
