//! The CQL backend against a real CQL server: `PAYCORE_TEST_CQL=host:port` names it (`.ci/run`
//! starts Apache Cassandra with scripts/cassandra.sh and sets it). Without it these tests say
//! so on stderr and pass without running: `cargo test` needs no server, and CI sets the variable
//! and checks that the suite ran (`cql_suite_ran` prints the marker CI looks for).

use super::ScyllaStore;
use crate::config::scylla::{Consistency, Dialect, ScyllaSettings};
use crate::storage::conformance as suite;
use crate::storage::{CommandStore, CreateOutcome, EventLog, OrderRecords, StoreError};
use std::sync::Arc;
use time::OffsetDateTime;

/// The variable naming the CQL server.
pub(super) const CQL_ENV: &str = "PAYCORE_TEST_CQL";
/// The lease of the take-over tests: longer than a create's wait for an order in flight, so the
/// first retry is refused, not a take-over.
const SHORT_LEASE_MS: u64 = 3_000;

pub(super) fn settings(contact: &str) -> ScyllaSettings {
    ScyllaSettings {
        contact_points: vec![contact.to_string()],
        dialect: Dialect::Cassandra,
        keyspace: std::env::var("PAYCORE_TEST_CQL_KEYSPACE")
            .unwrap_or_else(|_| "paycore_test".into()),
        consistency: Consistency::One,
        request_timeout_ms: 10_000,
        reservation_lease_ms: 20_000,
        ..ScyllaSettings::default()
    }
}

/// Settings with short timeouts and leases (`SHORT_LEASE_MS`): what the take-over and
/// recovery tests wait for. `keyspace`: the test's own, or `None` for the shared one.
pub(super) fn quick(contact: &str, keyspace: Option<&str>) -> ScyllaSettings {
    let base = settings(contact);
    ScyllaSettings {
        keyspace: keyspace.map_or(base.keyspace.clone(), str::to_string),
        request_timeout_ms: 1_000,
        reservation_lease_ms: SHORT_LEASE_MS,
        ..base
    }
}

/// A store on the test's own runtime (a session's connections live on the runtime that made
/// it). The keyspace is shared: each case uses merchants of its own.
async fn store() -> Option<Arc<ScyllaStore>> {
    let Ok(contact) = std::env::var(CQL_ENV) else {
        eprintln!("{CQL_ENV} is not set: the CQL backend tests did not run");
        return None;
    };
    let store = ScyllaStore::open(&settings(&contact))
        .await
        .unwrap_or_else(|e| panic!("{CQL_ENV}={contact}: {e}"));
    Some(Arc::new(store))
}

macro_rules! cql_test {
    ($name:ident, |$store:ident| $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some($store) = store().await else { return };
            $body.await;
        }
    };
}

cql_test!(tokens_and_numbers, |s| async move {
    suite::tokens_and_numbers(s.as_ref(), suite::TokenForm::Stored).await;
    suite::tokens_and_numbers(s.as_ref(), suite::TokenForm::Signed).await;
});
cql_test!(versioned_changes, |s| suite::versioned_changes(s.as_ref()));
cql_test!(one_token_one_winner, |s| suite::one_token_one_winner(
    s,
    16,
    suite::TokenForm::Stored
));
cql_test!(
    one_signed_token_one_winner,
    |s| suite::one_token_one_winner(s, 16, suite::TokenForm::Signed)
);
cql_test!(one_number_one_winner, |s| suite::one_number_one_winner(
    s, 16
));
cql_test!(one_change_per_version, |s| suite::one_change_per_version(
    s, 16
));
cql_test!(log_partitions_and_cursors, |s| {
    suite::log_partitions_and_cursors(s.as_ref())
});
cql_test!(command_replies, |s| suite::command_replies(s.as_ref()));

/// The timer case claims every due timer of its store: it runs in a keyspace of its own, made
/// for this run and dropped after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_claimed_leased_rescheduled() {
    let Ok(contact) = std::env::var(CQL_ENV) else {
        return;
    };
    let keyspace = format!("paycore_timers_{}", std::process::id());
    let own = ScyllaSettings {
        keyspace: keyspace.clone(),
        ..settings(&contact)
    };
    let store = ScyllaStore::open(&own).await.unwrap();
    suite::timers_claimed_leased_rescheduled(&store, false).await;
    suite::orders_without_timers_in_slices(&store).await;
    a_timer_entry_ahead_of_its_row_is_kept_for_it(&store).await;
    drop_keyspace(&store, &keyspace).await;
}

/// The race of a write that sets a timer with a claim: the index entry is written, a claim
/// reads it before the order's batch has answered (the row still at the previous attempt, or
/// absent), then the row lands. The claim leaves the young entry, so the next claim fires
/// the timer; had it deleted the entry, the timer would never fire. An entry past the grace
/// that still matches no row is deleted: its row landing after that is not fired.
async fn a_timer_entry_ahead_of_its_row_is_kept_for_it(store: &ScyllaStore) {
    use crate::domain::{OrderId, TimerKind};
    use crate::storage::TimerStore;
    let now = OffsetDateTime::now_utc();
    let due = now - time::Duration::seconds(1);
    let lease = now + time::Duration::minutes(1);
    let fired = |timers: &[crate::domain::Timer], id: &OrderId| {
        timers.iter().filter(|t| t.order_id == *id).count()
    };
    let (ahead, stale) = (OrderId::generate(), OrderId::generate());
    for id in [&ahead, &stale] {
        store
            .index_timer_only(id, TimerKind::Poll, due, 1)
            .await
            .unwrap();
    }
    // A young entry passed over does not take a place in the page: a due timer behind the
    // two, in the same shard as one of them, comes out of a claim of one.
    let shard = super::timers::shard_of(ahead.as_str());
    let behind = std::iter::repeat_with(OrderId::generate)
        .find(|id| super::timers::shard_of(id.as_str()) == shard)
        .unwrap();
    let later = due + time::Duration::milliseconds(500);
    store
        .write_timers(
            &behind,
            vec![crate::domain::TimerOp::Set {
                kind: TimerKind::Poll,
                due_at: later,
                attempt: 0,
            }],
        )
        .await
        .unwrap();
    let got = store.claim_due_timers(now, lease, 1).await.unwrap();
    assert_eq!(fired(&got, &behind), 1, "{got:?}");
    let got = store.claim_due_timers(now, lease, 100).await.unwrap();
    assert_eq!(fired(&got, &ahead) + fired(&got, &stale), 0, "{got:?}");
    store
        .set_timer_row_only(&ahead, TimerKind::Poll, due, 1)
        .await
        .unwrap();
    let got = store.claim_due_timers(now, lease, 100).await.unwrap();
    assert_eq!(
        fired(&got, &ahead),
        1,
        "fired once its row is there: {got:?}"
    );
    // Past the grace, the entry that still has no row is deleted.
    store.set_index_grace(Some(std::time::Duration::ZERO));
    let got = store.claim_due_timers(now, lease, 100).await.unwrap();
    store.set_index_grace(None);
    assert_eq!(fired(&got, &stale), 0);
    store
        .set_timer_row_only(&stale, TimerKind::Poll, due, 1)
        .await
        .unwrap();
    let got = store.claim_due_timers(now, lease, 100).await.unwrap();
    assert_eq!(fired(&got, &stale), 0, "its entry was deleted: {got:?}");
}

/// Counts come from the log: in a keyspace of its own, they follow creates and changes, a
/// second store on the keyspace (a restart) goes on from the stored tallies without counting
/// anything twice, and once every cursor is past a log block older than the retention, the
/// purge deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_from_the_log_and_the_purge() {
    use crate::storage::OrderStore;
    let Ok(contact) = std::env::var(CQL_ENV) else {
        return;
    };
    let keyspace = format!("paycore_counts_{}", std::process::id());
    let own = ScyllaSettings {
        keyspace: keyspace.clone(),
        ..settings(&contact)
    };
    let first = ScyllaStore::open(&own).await.unwrap();
    suite::status_counts_follow_changes(&first).await;
    let counted = first.status_counts().await.unwrap();
    let in_log: usize = {
        let mut n = 0;
        for p in 0..first.log_partitions() {
            n += first.events_after(p, 0, 1_000).await.unwrap().len();
        }
        n
    };
    assert_eq!(in_log, 4, "three creates and a change are logged");
    // Nothing is older than a retention of an hour: nothing goes.
    let hour_ago = OffsetDateTime::now_utc() - time::Duration::hours(1);
    assert_eq!(
        first
            .purge(OffsetDateTime::now_utc(), hour_ago)
            .await
            .unwrap(),
        0
    );
    first.close().await;
    assert!(matches!(first.ping().await, Err(StoreError::Closed)));

    // A restart: a new epoch of the log. The counts are those stored.
    let second = ScyllaStore::open(&own).await.unwrap();
    second.ping().await.unwrap();
    assert_eq!(second.status_counts().await.unwrap(), counted);
    // An event of the new epoch in each partition the first epoch wrote to, counted: every
    // cursor is then past the first epoch's blocks, which the purge deletes.
    let mut partitions = std::collections::BTreeSet::new();
    for p in 0..second.log_partitions() {
        if !second.events_after(p, 0, 1).await.unwrap().is_empty() {
            partitions.insert(p);
        }
    }
    let m = suite::merchant("epoch2");
    let mut more = 0;
    while !partitions.is_empty() {
        let (order, events) = suite::new_order(&m, &format!("E{more}"));
        let p = super::log::partition_of(order.order_id.as_str());
        if !partitions.remove(&p) {
            continue;
        }
        let t = suite::token(&second, &m, 60).await;
        let now = OffsetDateTime::now_utc();
        let made = second.create_order(t, order, events, vec![], now).await;
        assert_eq!(made.unwrap(), CreateOutcome::Created);
        more += 1;
    }
    let created = |c: &[(crate::domain::OrderStatus, i64)]| {
        c.iter()
            .find(|(s, _)| *s == crate::domain::OrderStatus::Created)
            .map_or(0, |(_, n)| *n)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while created(&second.status_counts().await.unwrap()) != created(&counted) + more {
        assert!(
            std::time::Instant::now() < deadline,
            "the new creates are counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let removed = second
        .purge(OffsetDateTime::now_utc(), later)
        .await
        .unwrap();
    assert!(removed >= 1, "the first epoch's blocks are purged");
    let mut left = 0;
    for p in 0..second.log_partitions() {
        left += second.events_after(p, 0, 1_000).await.unwrap().len();
    }
    assert_eq!(left as i64, more, "only the new epoch's events are left");
    // A reader beside the owner reads what it reads, up to the same heads.
    let reader = ScyllaStore::open_as(&own, super::Role::Reader)
        .await
        .unwrap();
    let mut read = 0;
    for p in 0..reader.log_partitions() {
        read += reader.events_after(p, 0, 1_000).await.unwrap().len();
    }
    assert_eq!(read as i64, more, "a reader reads the owner's events");
    assert_eq!(
        reader.cursors().await.unwrap().1,
        second.cursors().await.unwrap().1
    );
    assert_eq!(
        second
            .purge(OffsetDateTime::now_utc(), later)
            .await
            .unwrap(),
        0
    );
    drop_keyspace(&second, &keyspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_suite_ran() {
    if let Some(store) = store().await {
        let applied = store.applied_migrations().await.unwrap();
        let expected: Vec<i32> = super::schema::MIGRATIONS.iter().map(|m| m.0).collect();
        assert_eq!(applied, expected, "every migration is recorded once");
        eprintln!(
            "CQL backend suite: ran against {}",
            std::env::var(CQL_ENV).unwrap()
        );
    }
}

/// A second `migrate` applies nothing and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once() {
    let Some(_store) = store().await else { return };
    let contact = std::env::var(CQL_ENV).unwrap();
    assert_eq!(
        ScyllaStore::migrate(&settings(&contact)).await.unwrap(),
        Vec::<i32>::new()
    );
}

/// A create that died after taking its token (a crash between the steps) leaves the token held
/// for an order never stored: a retry within the holder's lease is told to retry; after it, the
/// retry takes the token over and is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_left_by_a_dead_create_is_taken_over_after_its_lease() {
    let Some(shared) = store().await else { return };
    let contact = std::env::var(CQL_ENV).unwrap();
    let short = ScyllaStore::open(&quick(&contact, None)).await.unwrap();
    let m = suite::merchant("dead");
    let t = suite::token(shared.as_ref(), &m, 60).await;
    let now = OffsetDateTime::now_utc();
    let (dead, _) = suite::new_order(&m, "DEAD");
    // Step 1 alone, as a create that crashed right after it.
    assert_eq!(short.take_token(&t, &dead, now).await.unwrap(), Ok(()));

    let (retry, events) = suite::new_order(&m, "RETRY");
    let early = short
        .create_order(t.clone(), retry.clone(), events.clone(), vec![], now)
        .await;
    assert!(
        matches!(early, Err(StoreError::VersionConflict(ref by)) if *by == dead.order_id.to_string()),
        "{early:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(SHORT_LEASE_MS + 100)).await;
    let late = short
        .create_order(
            t.clone(),
            retry.clone(),
            events,
            vec![],
            OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    assert_eq!(late, CreateOutcome::Created);
    // The dead create, were it to come back, finds the token taken by a stored order.
    let (_, dead_events) = suite::new_order(&m, "DEAD");
    let back = short
        .create_order(
            t,
            dead.clone(),
            dead_events,
            vec![],
            OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    assert_eq!(back, CreateOutcome::TokenUsed(Some(retry.order_id.clone())));
    assert!(short.load_order(&dead.order_id).await.unwrap().is_none());
}

/// Likewise for a merchant number held by a create that died after step 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_left_by_a_dead_create_is_taken_over_after_its_lease() {
    let Some(shared) = store().await else { return };
    let contact = std::env::var(CQL_ENV).unwrap();
    let short = ScyllaStore::open(&quick(&contact, None)).await.unwrap();
    let m = suite::merchant("deadno");
    let (dead, _) = suite::new_order(&m, "N1");
    assert_eq!(short.take_number(&dead).await.unwrap(), Ok(()));
    assert_eq!(
        short
            .find_by_merchant_order_no(&dead.merchant_id, &dead.merchant_order_no)
            .await
            .unwrap(),
        None,
        "a number held for an order never stored finds nothing"
    );

    let t = suite::token(shared.as_ref(), &m, 60).await;
    let (retry, events) = suite::new_order(&m, "N1");
    let early = short
        .create_order(
            t.clone(),
            retry.clone(),
            events.clone(),
            vec![],
            OffsetDateTime::now_utc(),
        )
        .await;
    assert!(
        matches!(early, Err(StoreError::VersionConflict(ref by)) if *by == dead.order_id.to_string()),
        "{early:?}"
    );
    // The refused create gave its token back.
    tokio::time::sleep(std::time::Duration::from_millis(SHORT_LEASE_MS + 100)).await;
    let late = short
        .create_order(t, retry.clone(), events, vec![], OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(late, CreateOutcome::Created);
    let found = short
        .find_by_merchant_order_no(&retry.merchant_id, &retry.merchant_order_no)
        .await
        .unwrap();
    assert_eq!(found.map(|o| o.order_id), Some(retry.order_id));
}

/// The aim, counted: a create is two LWT rounds (token, number) and one batch, a change
/// is one LWT round; each timer a write sets adds one plain index insert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_is_two_lwt_rounds_and_a_change_one() {
    let Some(store) = store().await else { return };
    let m = suite::merchant("count");
    let t = suite::token(store.as_ref(), &m, 60).await;
    let (order, events) = suite::new_order(&m, "C1");
    let timers = crate::domain::timer::on_create(&order);
    assert_eq!(timers.len(), 1, "a create sets its expiry timer");
    let before = store.counts.get();
    let created = store
        .create_order(t, order.clone(), events, timers, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(created, CreateOutcome::Created);
    let after_create = store.counts.get();
    assert_eq!(
        (after_create.0 - before.0, after_create.1 - before.1),
        (2, 5),
        "create: 2 LWT rounds; the timer's index entry, the log intent, the order's batch, \
         its event's log entry, the intent deleted"
    );
    let (next, events) = suite::paying(&order);
    let poll = crate::domain::TimerOp::Set {
        kind: crate::domain::TimerKind::Poll,
        due_at: OffsetDateTime::now_utc() + time::Duration::seconds(5),
        attempt: 0,
    };
    store
        .update_order(next, order.version, order.status, events, vec![poll])
        .await
        .unwrap();
    let after_change = store.counts.get();
    assert_eq!(
        (
            after_change.0 - after_create.0,
            after_change.1 - after_create.1
        ),
        (1, 4),
        "change: 1 LWT round (the conditional batch); the timer's index entry, the log \
         intent, its event's log entry, the intent deleted"
    );

    // A Kafka command's create: the reply's key instead of a token, the same rounds.
    let (by_command, events) = suite::new_order(&m, "C2");
    let reply = crate::storage::CommandReply {
        merchant_id: by_command.merchant_id.clone(),
        request_id: crate::domain::RequestId::parse("count-1").unwrap(),
        command_hash: "h".into(),
        status: 201,
        body: b"{}".to_vec(),
        order_id: Some(by_command.order_id.clone()),
        created_at: OffsetDateTime::now_utc(),
    };
    let before = store.counts.get();
    let created = store
        .create_order_for_command(reply, by_command, events, vec![])
        .await
        .unwrap();
    assert_eq!(created, CreateOutcome::Created);
    let after = store.counts.get();
    assert_eq!(after.0 - before.0, 2, "a command's create: 2 LWT rounds");
}

/// A change committed and never logged (a crash between the two) is logged by the next paycore
/// that opens the log, from the intent it left; the next owner's positions follow the old
/// owner's, and a reader goes from one epoch to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_committed_and_not_logged_is_logged_by_the_next_owner() {
    let Ok(contact) = std::env::var(CQL_ENV) else {
        return;
    };
    let keyspace = format!("paycore_recovery_{}", std::process::id());
    let own = quick(&contact, Some(&keyspace));
    let first = ScyllaStore::open(&own).await.unwrap();
    let m = suite::merchant("rec");
    let t = suite::token(&first, &m, 60).await;
    let (order, created) = suite::new_order(&m, "R1");
    let stored = first.create_order(
        t,
        order.clone(),
        created.clone(),
        vec![],
        OffsetDateTime::now_utc(),
    );
    assert_eq!(stored.await.unwrap(), CreateOutcome::Created);
    let p = super::log::partition_of(order.order_id.as_str());
    first
        .skip_logging
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (next, paying) = suite::paying(&order);
    first
        .update_order(
            next.clone(),
            order.version,
            order.status,
            paying.clone(),
            vec![],
        )
        .await
        .unwrap();
    let logged = first.events_after(p, 0, 100).await.unwrap();
    assert_eq!(
        logged
            .iter()
            .map(|e| e.event.event_id.clone())
            .collect::<Vec<_>>(),
        created
            .iter()
            .map(|e| e.event_id.clone())
            .collect::<Vec<_>>(),
        "the change is stored, its event not logged"
    );
    assert_eq!(first.load_order(&order.order_id).await.unwrap(), Some(next));
    assert_eq!(
        intents_in(&first, &keyspace, p).await,
        1,
        "its intent is left"
    );

    // "Restart": another store opens the log.
    let second = ScyllaStore::open(&own).await.unwrap();
    let all = second.events_after(p, 0, 100).await.unwrap();
    let ids: Vec<_> = all.iter().map(|e| e.event.event_id.clone()).collect();
    let mut expected: Vec<_> = created.iter().map(|e| e.event_id.clone()).collect();
    expected.extend(paying.iter().map(|e| e.event_id.clone()));
    assert_eq!(
        ids, expected,
        "read across the two owners' epochs, in order"
    );
    assert!(all[0].seq < all[1].seq);
    assert_eq!(
        intents_in(&second, &keyspace, p).await,
        0,
        "the intent is gone once its events are logged"
    );
    drop_keyspace(&second, &keyspace).await;
}

/// The intents left in a log partition.
async fn intents_in(store: &ScyllaStore, keyspace: &str, p: u32) -> usize {
    store
        .session
        .query_unpaged(
            format!("SELECT order_id FROM {keyspace}.change_intents WHERE partition = ?"),
            (p as i32,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows_num()
}

/// A change whose write answered an error but was applied (a coordinator's timeout after the
/// replicas wrote it) has its events logged by the running paycore, without a restart; one
/// that answered an error and was not applied (its version taken by another change) logs
/// nothing and leaves no intent. An intent a crash left for a change not applied, at a version
/// another change holds, is dropped by the next owner without logging that change's events
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_with_a_lost_answer_is_settled_while_running() {
    let Ok(contact) = std::env::var(CQL_ENV) else {
        return;
    };
    let keyspace = format!("paycore_lost_answer_{}", std::process::id());
    let own = quick(&contact, Some(&keyspace));
    let store = ScyllaStore::open(&own).await.unwrap();
    let m = suite::merchant("lost");
    let t = suite::token(&store, &m, 60).await;
    let (order, created) = suite::new_order(&m, "L1");
    let stored = store.create_order(t, order.clone(), created, vec![], OffsetDateTime::now_utc());
    assert_eq!(stored.await.unwrap(), CreateOutcome::Created);
    let p = super::log::partition_of(order.order_id.as_str());
    let logged = |store: &ScyllaStore| {
        let store = store.clone();
        async move {
            store
                .events_after(p, 0, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event.event_id.clone())
                .collect::<Vec<_>>()
        }
    };
    let before = logged(&store).await;
    assert_eq!(before.len(), 1);

    // Applied, answered with an error.
    let (next, paying) = suite::paying(&order);
    store
        .lose_outcome
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let lost = store
        .update_order(
            next.clone(),
            order.version,
            order.status,
            paying.clone(),
            vec![],
        )
        .await;
    assert!(matches!(lost, Err(StoreError::Backend(_))), "{lost:?}");
    assert_eq!(
        store.load_order(&order.order_id).await.unwrap(),
        Some(next.clone())
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while logged(&store).await.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the applied change is never logged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(logged(&store).await[1], paying[0].event_id);
    assert_eq!(
        intents_in(&store, &keyspace, p).await,
        0,
        "its intent is deleted"
    );

    // Not applied (a stale version), answered with an error.
    let (stale, stale_events) = suite::paying(&order);
    store
        .lose_outcome
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let lost = store
        .update_order(stale, order.version, order.status, stale_events, vec![])
        .await;
    assert!(matches!(lost, Err(StoreError::Backend(_))), "{lost:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while intents_in(&store, &keyspace, p).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "its intent is never deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(logged(&store).await.len(), 2, "nothing logged for it");
    assert_eq!(store.load_order(&order.order_id).await.unwrap(), Some(next));

    // The same, cut short by a crash before its intent is deleted: the intent stays.
    let (stale, stale_events) = suite::paying(&order);
    store
        .skip_logging
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let refused = store
        .update_order(stale, order.version, order.status, stale_events, vec![])
        .await;
    assert!(
        matches!(refused, Err(StoreError::VersionConflict(_))),
        "{refused:?}"
    );
    store
        .skip_logging
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(intents_in(&store, &keyspace, p).await, 1);
    let second = ScyllaStore::open(&own).await.unwrap();
    assert_eq!(
        logged(&second).await.len(),
        2,
        "the version's events are another change's: not logged again"
    );
    assert_eq!(
        intents_in(&second, &keyspace, p).await,
        0,
        "and the intent is dropped"
    );
    drop_keyspace(&second, &keyspace).await;
}

/// Drops a keyspace a test made for itself (schema changes take seconds on Cassandra).
pub(super) async fn drop_keyspace(store: &ScyllaStore, keyspace: &str) {
    let mut drop = scylla::statement::unprepared::Statement::new(format!(
        "DROP KEYSPACE IF EXISTS {keyspace}"
    ));
    drop.set_request_timeout(Some(std::time::Duration::from_secs(60)));
    store.session.query_unpaged(drop, ()).await.unwrap();
}
