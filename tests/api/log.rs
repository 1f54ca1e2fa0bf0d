//! The event log: durable named consumers read at least once, resume from their cursors, hold
//! the purge until they pass an event, and `/readyz` names one that lags past the bound.

use crate::common::*;
use std::time::Duration;
use time::OffsetDateTime;

async fn paid_order(t: &TestApp, no: &str) -> String {
    let id = t.create(no, 100).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    t.pay(&id).await;
    t.wait_status(&id, "PAID").await;
    id
}

/// Purges every event each cursor has passed (retention set to nothing).
async fn purge_all(t: &TestApp) -> u64 {
    let later = OffsetDateTime::now_utc() + time::Duration::days(1);
    let mut removed = 0;
    loop {
        match t.app().store().purge(later, later).await.unwrap() {
            0 => return removed,
            n => removed += n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_reads_at_least_once_resumes_from_its_cursor_and_holds_the_purge() {
    let t = spawn_app(|_| {}).await;
    let mut log = t.app().consumer("ext").await.unwrap();
    let id = paid_order(&t, "LOG-1").await;
    let first = log.poll(100, Duration::from_secs(5)).await.unwrap();
    let mine: Vec<_> = first.iter().filter(|e| e.event.order_id == id).collect();
    assert_eq!(mine[0].event.event_type, "order.created");
    assert_eq!(mine[0].position().partition, 0);
    assert!(first.windows(2).all(|w| w[0].seq < w[1].seq), "log order");
    assert!(
        log.commit(paycore::storage::Position {
            partition: 0,
            seq: first.last().unwrap().seq + 1
        })
        .await
        .is_err(),
        "cannot commit unseen events"
    );

    // Not committed: the same name reads it all again.
    drop(log);
    let mut log = t.app().consumer("ext").await.unwrap();
    let again = log.poll(100, Duration::from_secs(5)).await.unwrap();
    assert_eq!(again.first(), first.first(), "read again from the cursor");

    // Commit only the first: the purge may take it, not the rest.
    let created_seq = mine[0].seq;
    log.commit(mine[0].position()).await.unwrap();
    purge_all(&t).await;
    let left = t.app().store().events_after(0, 0, 100).await.unwrap();
    assert!(
        left.iter().all(|e| e.seq > created_seq),
        "what every cursor passed is purged"
    );
    assert!(
        left.iter()
            .any(|e| e.event.order_id == id && e.event.event_type == "order.paid"),
        "what ext has not passed is kept"
    );
    drop(log);
    let mut log = t.app().consumer("ext").await.unwrap();
    assert_eq!(log.committed(), [created_seq]);
    let resumed = log.poll(100, Duration::from_secs(5)).await.unwrap();
    assert!(resumed[0].seq > created_seq);
    assert_eq!(
        resumed
            .iter()
            .filter(|e| e.event.order_id == id)
            .map(|e| e.event.event_type.as_str())
            .collect::<Vec<_>>(),
        ["order.paying", "order.paid"]
    );

    // Unregistered, it no longer holds anything.
    log.unregister().await.unwrap();
    let (cursors, _) = t.app().store().cursors().await.unwrap();
    assert!(cursors.iter().all(|(name, _)| name != "ext"), "{cursors:?}");
    assert!(purge_all(&t).await > 0);
    assert!(
        t.app()
            .store()
            .events_after(0, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(t.app().consumer("Bad Name").await.is_err());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_a_consumer_lags_past_the_bound_and_says_which() {
    let t = spawn_app(|s| s.stream.max_consumer_lag = 3).await;
    let log = t.app().consumer("slow").await.unwrap();
    let ready = t.call("GET", "/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["consumers"]["slow"]["lag"], 0);
    assert_eq!(ready.body["tasks"]["notifier"]["state"], "running");
    assert_eq!(ready.body["tasks"]["notifier-delivery"]["state"], "running");

    paid_order(&t, "LAG-1").await; // created, paying, paid
    paid_order(&t, "LAG-2").await;
    let ready = t.call("GET", "/readyz", None).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.body["consumers"]["slow"]["lag"], 6);
    assert_eq!(ready.body["consumers"]["slow"]["lagging"], true);
    assert_eq!(ready.body["storage"], "ok");
    assert_eq!(
        metric(&t, "paycore_stream_consumer_lag_events{consumer=\"slow\"}").await,
        Some(6.0)
    );
    // The notifier keeps up: not named.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            t.call("GET", "/readyz", None).await.body["consumers"]["notifier"]["lagging"] == false
        })
        .await
    );

    log.unregister().await.unwrap();
    let ready = t.call("GET", "/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(ready.body["consumers"].get("slow").is_none());
    t.stop().await;
}
