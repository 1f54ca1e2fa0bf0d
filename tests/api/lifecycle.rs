//! Orders through their life: create, pay, callback, close, look-up, and the invariants under
//! concurrency (one charge per order, one create per token).

use crate::common::*;
use serde_json::json;
use std::collections::HashSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_pay_reaches_paid_through_the_callback() {
    let t = spawn_app(|_| {}).await;
    let order = t.create("LIFE-1", 12345).await;
    assert_eq!(order["status"], "CREATED");
    assert_eq!(order["version"], 1);
    assert_eq!(order["amount"], 12345);
    assert_eq!(order["currency"], "CNY");
    assert_eq!(
        order["fulfillment"],
        json!({"status": "PENDING", "attempts": 0, "last_error": null, "given_up": false})
    );
    let id = order["order_id"].as_str().unwrap();

    let pay = t.pay(id).await;
    assert_eq!(pay.status, 202, "{:?}", pay.body);
    assert_eq!(pay.body["status"], "PAYING");
    assert!(
        pay.body["channel_payload"]["code_url"]
            .as_str()
            .unwrap()
            .starts_with("sim://")
    );

    let paid = t.wait_status(id, "PAID").await;
    // created, pay intent, paying, paid.
    assert_eq!(paid["version"], 4);
    assert_eq!(paid["pay_serial_no"], pay.body["pay_serial_no"]);
    assert!(paid["paid_at"].is_string());

    let found = t
        .call("GET", "/v1/orders?merchant_order_no=LIFE-1", None)
        .await;
    assert_eq!(
        (found.status, found.body["order_id"].as_str()),
        (200, Some(id))
    );

    // Paid orders refuse pay and close; nothing changes.
    let again = t.pay(id).await;
    assert_eq!((again.status, again.code()), (409, "already_paid"));
    let close = t
        .call("POST", &format!("/v1/orders/{id}/close"), None)
        .await;
    assert_eq!((close.status, close.code()), (409, "already_paid"));
    assert_eq!(t.order(id).await.body["version"], 4);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_pays_open_one_payment_and_charge_once() {
    let t = spawn_app(|s| {
        s.simulator.behaviour.pay_delay_ms_min = 300;
        s.simulator.behaviour.pay_delay_ms_max = 300;
    })
    .await;
    let id = t.create("HOT-1", 500).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    let calls = (0..50).map(|_| t.pay(&id));
    let answers = futures::future::join_all(calls).await;
    let serials: HashSet<String> = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status, 202, "{:?}", r.body);
            r.body["pay_serial_no"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        serials.len(),
        1,
        "every pay answered the same serial: {serials:?}"
    );
    t.wait_status(&id, "PAID").await;
    let audit = t.sim_audit(&id).await;
    assert_eq!(audit["payments"].as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(audit["charges"].as_array().unwrap().len(), 1, "{audit}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_creates_with_one_token_make_one_order() {
    let t = spawn_app(|_| {}).await;
    let token = t.token().await;
    let calls = (0..20).map(|i| {
        t.call(
            "POST",
            "/v1/orders",
            Some(TestApp::order_body(&token, &format!("TOK-{i}"), 100)),
        )
    });
    let answers = futures::future::join_all(calls).await;
    let created: Vec<_> = answers.iter().filter(|r| r.status == 201).collect();
    assert_eq!(
        created.len(),
        1,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let winner = created[0].body["order_id"].clone();
    for r in answers.iter().filter(|r| r.status != 201) {
        assert_eq!((r.status, r.code()), (409, "token_used"), "{:?}", r.body);
        assert_eq!(r.body["error"]["order_id"], winner);
    }
    let mut orders = 0;
    for i in 0..20 {
        if t.call(
            "GET",
            &format!("/v1/orders?merchant_order_no=TOK-{i}"),
            None,
        )
        .await
        .status
            == 200
        {
            orders += 1;
        }
    }
    assert_eq!(orders, 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_merchant_order_no_names_the_existing_order_and_keeps_the_token() {
    let t = spawn_app(|_| {}).await;
    let first = t.create("DUP-1", 100).await;
    let token = t.token().await;
    let r = t
        .call(
            "POST",
            "/v1/orders",
            Some(TestApp::order_body(&token, "DUP-1", 999)),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "duplicate_order"));
    assert_eq!(r.body["error"]["order_id"], first["order_id"]);
    // The refused create consumed nothing: the same token still creates another order.
    let ok = t
        .call(
            "POST",
            "/v1/orders",
            Some(TestApp::order_body(&token, "DUP-2", 100)),
        )
        .await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
    let existing = t
        .call("GET", "/v1/orders?merchant_order_no=DUP-1", None)
        .await;
    assert_eq!(existing.body["amount"], 100);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_created_and_paying_orders() {
    let t = spawn_app(|s| {
        s.simulator.behaviour.pay_delay_ms_min = 60_000;
        s.simulator.behaviour.pay_delay_ms_max = 60_000;
    })
    .await;
    let a = t.create("CL-1", 100).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = t.call("POST", &format!("/v1/orders/{a}/close"), None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("CLOSED")));
    let again = t.call("POST", &format!("/v1/orders/{a}/close"), None).await;
    assert_eq!(
        (again.status, again.body["version"].as_i64()),
        (200, Some(2)),
        "closing twice changes nothing"
    );
    let pay = t.pay(&a).await;
    assert_eq!((pay.status, pay.code()), (409, "order_closed"));

    // A paying order closes only through the channel, which then holds no open payment.
    let b = t.create("CL-2", 100).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(t.pay(&b).await.status, 202);
    let r = t.call("POST", &format!("/v1/orders/{b}/close"), None).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("CLOSED")),
        "{:?}",
        r.body
    );
    let audit = t.sim_audit(&b).await;
    assert_eq!(audit["payments"][0]["status"], "CLOSED");
    assert_eq!(audit["charges"].as_array().unwrap().len(), 0);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_payments_end_failed() {
    let t = spawn_app(|s| s.simulator.behaviour.fail_rate = 1.0).await;
    let id = t.create("FAIL-1", 100).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(t.pay(&id).await.status, 202);
    let failed = t.wait_status(&id, "FAILED").await;
    assert!(failed["failure_reason"].is_string());
    let pay = t.pay(&id).await;
    assert_eq!((pay.status, pay.code()), (409, "order_failed"));
    assert_eq!(
        t.sim_audit(&id).await["charges"].as_array().unwrap().len(),
        0
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_sees_only_its_own_orders() {
    let t = spawn_app(|_| {}).await;
    let id = t.create("MINE-1", 100).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    let read = t
        .call_as(
            "other",
            OTHER_SECRET,
            "GET",
            &format!("/v1/orders/{id}"),
            None,
        )
        .await;
    assert_eq!((read.status, read.code()), (404, "order_not_found"));
    let lookup = t
        .call_as(
            "other",
            OTHER_SECRET,
            "GET",
            "/v1/orders?merchant_order_no=MINE-1",
            None,
        )
        .await;
    assert_eq!(lookup.status, 404);
    let close = t
        .call_as(
            "other",
            OTHER_SECRET,
            "POST",
            &format!("/v1/orders/{id}/close"),
            None,
        )
        .await;
    assert_eq!(close.status, 404);
    let pay = t
        .call_as(
            "other",
            OTHER_SECRET,
            "POST",
            &format!("/v1/orders/{id}/pay"),
            Some(json!({"pay_method": "native"})),
        )
        .await;
    assert_eq!(pay.status, 404);
    assert_eq!(t.order(&id).await.body["status"], "CREATED");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_lost_callbacks_are_harmless() {
    let t = spawn_app(|s| s.simulator.behaviour.duplicate_callback_rate = 1.0).await;
    let id = t.create("DUPCB-1", 100).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    t.pay(&id).await;
    let paid = t.wait_status(&id, "PAID").await;
    // Both deliveries were accepted, and the second changed nothing.
    let ok = wait_until(std::time::Duration::from_secs(10), || async {
        metric(
            &t,
            "paycore_channel_callbacks_total{channel=\"sim\",outcome=\"applied\"}",
        )
        .await
            == Some(2.0)
    })
    .await;
    assert!(ok, "the duplicate callback was never delivered");
    assert_eq!(t.order(&id).await.body["version"], paid["version"]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_actor_cap_holds_and_passivated_orders_still_answer() {
    let t = spawn_app(|s| s.actors.max_live_orders = 5).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let id = t.create(&format!("CAP-{i}"), 100).await["order_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(t.pay(&id).await.status, 202);
        ids.push(id);
        let live = t.app().orders().live_actors().await.unwrap();
        assert!(live <= 5, "live actors {live} over the cap");
    }
    for id in &ids {
        t.wait_status(id, "PAID").await;
    }
    // The first order's actor was passivated long ago; a new one answers from storage.
    let again = t.pay(&ids[0]).await;
    assert_eq!((again.status, again.code()), (409, "already_paid"));
    t.stop().await;
}
