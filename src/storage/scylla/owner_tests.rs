//! The owner lease against a real CQL server (`PAYCORE_TEST_CQL`): one owner at a time, a
//! clean stop hands over at once, a crashed holder's lease runs out, a holder whose lease was
//! taken fences itself, and readers open beside the owner without writing changes.

use super::tests::{CQL_ENV, drop_keyspace, quick};
use super::{Role, ScyllaStore};
use crate::config::scylla::ScyllaSettings;
use crate::storage::conformance as suite;
use crate::storage::{OrderRecords, OrderStore, StoreError};
use std::sync::atomic::Ordering;
use std::time::Duration;
use time::OffsetDateTime;

/// A keyspace of the test's own, with the shortest owner lease its request timeout allows.
fn leased(contact: &str, keyspace: &str) -> ScyllaSettings {
    let quick = quick(contact, Some(keyspace));
    ScyllaSettings {
        owner_lease_ms: 3 * quick.request_timeout_ms,
        ..quick
    }
}

/// A second owner waits while the first holds the lease, gives up naming it when it keeps
/// renewing, and takes over at once after the first stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_owner_at_a_time_and_a_clean_stop_hands_over() {
    let Ok(contact) = std::env::var(CQL_ENV) else {
        return;
    };
    let keyspace = format!("paycore_owner_{}", std::process::id());
    let own = leased(&contact, &keyspace);
    let first = ScyllaStore::open_as(&own, Role::Owner).await.unwrap();

    // Beside it: a reader opens, and is refused a change.
    let reader = ScyllaStore::open_as(&own, Role::Reader).await.unwrap();
    let m = suite::merchant("own");
    let t = suite::token(&reader, &m, 60).await;
    let (order, created) = suite::new_order(&m, "O1");
    let refused = reader
        .create_order(t, order, created, vec![], OffsetDateTime::now_utc())
        .await;
    assert!(
        matches!(refused, Err(StoreError::Backend(_))),
        "{refused:?}"
    );

    // A second owner keeps waiting while the first renews, then gives up naming it.
    let second = ScyllaStore::open_as(&own, Role::Owner).await;
    let Err(StoreError::Backend(why)) = second else {
        panic!("a second owner opened beside a live one");
    };
    assert!(why.contains("owned by another paycore"), "{why}");
    assert!(!first.fenced(), "the holder keeps its lease");

    // A clean stop releases the lease: the next owner does not wait for it to run out.
    let next = tokio::spawn({
        let own = own.clone();
        async move { ScyllaStore::open_as(&own, Role::Owner).await }
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!next.is_finished(), "took the lease of a live holder");
    first.close().await;
    let next = tokio::time::timeout(Duration::from_secs(20), next)
        .await
        .expect("the next owner opens")
        .unwrap()
        .unwrap();
    assert!(!next.fenced());
    next.close().await;
    drop_keyspace(&reader, &keyspace).await;
}

/// A holder that stops renewing (a crash) loses the lease when it runs out, and the next owner
/// takes it; a holder whose lease another took fences itself: every statement is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holder_is_taken_over_and_a_displaced_one_fences_itself() {
    let Ok(contact) = std::env::var(CQL_ENV) else {
        return;
    };
    let keyspace = format!("paycore_owner_crash_{}", std::process::id());
    let own = leased(&contact, &keyspace);
    let crashed = ScyllaStore::open_as(&own, Role::Owner).await.unwrap();
    // As a kill: renewals stop, nothing is released.
    crashed.closed.store(true, Ordering::Release);
    let next = tokio::time::timeout(
        Duration::from_secs(20),
        ScyllaStore::open_as(&own, Role::Owner),
    )
    .await
    .expect("the lease of a holder that stopped renewing runs out")
    .unwrap();

    // Another process takes the lease from under `next` (as after a pause longer than the
    // lease): its next renewal is refused, and it fences itself.
    next.session
        .query_unpaged(
            format!(
                "UPDATE {keyspace}.owner_lease SET holder = 'someone else' WHERE name = 'serve'"
            ),
            (),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !next.fenced() {
        assert!(std::time::Instant::now() < deadline, "never fenced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let any = crate::domain::OrderId::generate();
    assert!(matches!(
        next.load_order(&any).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(next.ping().await, Err(StoreError::Closed)));
    let cleanup = ScyllaStore::open_as(&own, Role::Reader).await.unwrap();
    drop_keyspace(&cleanup, &keyspace).await;
}
