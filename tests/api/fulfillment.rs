//! Fulfillment at the merchant's business system, against the shipped business-system
//! simulator: write-offs retried from the exception list, given up into an automatic refund by
//! the original route, and merchant refunds that reverse the write-off first.

use crate::common::*;
use paycore::config::{BillerTarget, Secret, Settings};
use serde_json::{Value, json};
use std::time::Duration;

/// The demo merchant fulfils at the in-process business system; retries every 50 ms.
fn with_biller(s: &mut Settings, retries: usize) {
    s.merchants[0].biller = Some(BillerTarget {
        url: String::new(),
        secret: Secret::new(s.simulator.biller.secret.clone()),
        timeout_ms: 2_000,
        max_in_flight: 8,
    });
    s.orders.fulfillment_retry_ms = vec![50; retries];
    s.orders.refund_retry_ms = vec![100, 150, 200, 300, 400, 500];
    s.timers.tick_ms = 20;
}

async fn paid_order(t: &TestApp, no: &str, amount: i64) -> String {
    let id = t.create(no, amount).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(t.pay(&id).await.status, 202);
    t.wait_status(&id, "PAID").await;
    id
}

async fn fulfilled(t: &TestApp, id: &str) -> Value {
    wait_for(
        t,
        "fulfillment",
        Duration::from_secs(10),
        |o| o["fulfillment"]["status"] == "SUCCEEDED",
        id,
    )
    .await
}

async fn refund(t: &TestApp, id: &str, no: &str, amount: i64) -> Resp {
    t.call(
        "POST",
        &format!("/v1/orders/{id}/refunds"),
        Some(json!({"refund_no": no, "amount": amount})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_off_that_fails_twice_is_retried_and_credited_once() {
    let t = spawn_app(|s| {
        with_biller(s, 5);
        s.simulator.biller.fail_first = 2;
    })
    .await;
    let id = paid_order(&t, "FUL-1", 700).await;
    let order = fulfilled(&t, &id).await;
    assert_eq!(order["fulfillment"]["attempts"], 3);
    let audit = t.biller_audit(&id).await;
    assert_eq!(audit["attempts"], 3, "{audit}");
    let write_offs = audit["write_offs"].as_array().unwrap();
    assert_eq!(write_offs.len(), 1, "credited once");
    assert_eq!(write_offs[0]["amount"], 700);
    assert_eq!(
        metric(&t, "paycore_fulfillments_total{outcome=\"failed\"}").await,
        Some(2.0)
    );
    assert_eq!(
        metric(&t, "paycore_fulfillments_total{outcome=\"succeeded\"}").await,
        Some(1.0)
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_off_that_always_fails_is_given_up_and_refunded_exactly_once() {
    let t = spawn_app(|s| {
        with_biller(s, 2);
        s.simulator.biller.permanent_failure = true;
    })
    .await;
    let mut log = t.app().consumer("test").await.unwrap();
    let id = paid_order(&t, "FUL-2", 900).await;
    let order = t.wait_status(&id, "REFUNDED").await;
    assert_eq!(order["fulfillment"]["status"], "FAILED");
    assert_eq!(
        order["fulfillment"]["attempts"], 3,
        "the first and two retries"
    );
    assert_eq!(order["refunded_amount"], 900);
    let audit = t.sim_audit(&id).await;
    let refunds = audit["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 1, "refunded once at the channel: {audit}");
    assert_eq!(refunds[0]["amount"], 900);
    let biller = t.biller_audit(&id).await;
    assert_eq!(biller["attempts"], 3);
    assert!(biller["write_offs"].as_array().unwrap().is_empty());
    // Events say so, in version order.
    let types: Vec<_> = events_until(&mut log, &id, "refund.succeeded")
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        [
            "order.created",
            "order.paying",
            "order.paid",
            "order.fulfillment_failed",
            "refund.succeeded"
        ]
    );
    // Nothing is left for the merchant to refund.
    let r = refund(&t, &id, "LATE", 1).await;
    assert_eq!(r.code(), "refund_exceeds_paid");
    assert_eq!(
        metric(&t, "paycore_fulfillments_total{outcome=\"given_up\"}").await,
        Some(1.0)
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_of_a_fulfilled_order_reverses_the_write_off_first() {
    let t = spawn_app(|s| with_biller(s, 3)).await;
    let id = paid_order(&t, "FUL-3", 1_000).await;
    fulfilled(&t, &id).await;
    let r = refund(&t, &id, "R-1", 300).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let again = refund(&t, &id, "R-1", 300).await;
    assert_eq!(again.body["refund_id"], r.body["refund_id"]);
    let order = wait_for(
        &t,
        "the refund",
        Duration::from_secs(10),
        |o| o["refunded_amount"] == 300,
        &id,
    )
    .await;
    assert_eq!(order["status"], "PAID");
    let biller = t.biller_audit(&id).await;
    let reversals = biller["reversals"].as_array().unwrap();
    assert_eq!(reversals.len(), 1, "reversed once: {biller}");
    assert_eq!(reversals[0]["amount"], 300);
    assert_eq!(biller["write_offs"][0]["reversed_amount"], 300);
    assert_eq!(
        t.sim_audit(&id).await["refunds"].as_array().unwrap().len(),
        1
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reversal_refuses_the_refund_and_refunds_nothing() {
    let t = spawn_app(|s| {
        with_biller(s, 3);
        s.simulator.biller.refuse_reversals = true;
    })
    .await;
    let id = paid_order(&t, "FUL-4", 500).await;
    let before = fulfilled(&t, &id).await;
    let r = refund(&t, &id, "R-1", 500).await;
    assert_eq!(
        (r.status, r.code()),
        (409, "reversal_refused"),
        "{:?}",
        r.body
    );
    let after = t.order(&id).await.body;
    assert_eq!(after["version"], before["version"], "nothing changed");
    assert_eq!(after["refunded_amount"], 0);
    assert!(
        t.sim_audit(&id).await["refunds"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_waits_while_fulfillment_is_retried() {
    let t = spawn_app(|s| {
        with_biller(s, 3);
        s.orders.fulfillment_retry_ms = vec![60_000];
        s.simulator.biller.fail_first = 1;
    })
    .await;
    let id = paid_order(&t, "FUL-5", 500).await;
    wait_for(
        &t,
        "a failed first write-off",
        Duration::from_secs(10),
        |o| o["fulfillment"]["status"] == "FAILED",
        &id,
    )
    .await;
    let r = refund(&t, &id, "R-1", 100).await;
    assert_eq!(
        (r.status, r.code()),
        (409, "fulfillment_pending"),
        "{:?}",
        r.body
    );
    assert!(
        t.sim_audit(&id).await["refunds"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_of_a_merchant_without_a_business_system_are_not_fulfilled_by_paycore() {
    let t = spawn_app(|s| s.timers.tick_ms = 20).await;
    let id = paid_order(&t, "FUL-6", 500).await;
    let r = refund(&t, &id, "R-1", 100).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let order = t.order(&id).await.body;
    assert_eq!(order["fulfillment"]["status"], "PENDING");
    assert_eq!(order["fulfillment"]["attempts"], 0);
    assert_eq!(t.biller_audit(&id).await["attempts"], 0);
    t.stop().await;
}
