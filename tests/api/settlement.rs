//! Every order reaches a final state by itself: polling when callbacks are lost, expiry close
//! (asking the channel first), refunds carried to the end, extra payments refunded, callbacks
//! checked against the order's channel, and one actor per order under a tiny live-actor cap.
//! The simulator's audit endpoint is the witness of what was charged and refunded. Schedules are
//! shortened by configuration; waits poll with deadlines.

use crate::common::*;
use paycore::config::{ChannelSettings, Secret, Settings};
use paycore_channel_sim::protocol as p;
use serde_json::{Value, json};
use std::time::Duration;

/// Timers in tens of milliseconds instead of seconds and minutes.
fn fast(s: &mut Settings) {
    s.orders.poll_schedule_ms = vec![100, 150, 200, 250, 300, 400, 500];
    s.orders.refund_retry_ms = vec![100, 150, 200, 300, 400, 500, 600, 800, 1000, 1200];
    s.orders.expire_retry_ms = vec![100, 200, 300];
    s.orders.min_expire_seconds = 1;
    s.timers.tick_ms = 20;
}

async fn create_expiring(t: &TestApp, no: &str, amount: i64, expire_seconds: i64) -> String {
    let token = t.token().await;
    let mut body = TestApp::order_body(&token, no, amount);
    body["expire_seconds"] = json!(expire_seconds);
    let r = t.call("POST", "/v1/orders", Some(body)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["order_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_callback_lost_and_every_order_still_reaches_paid_by_polling() {
    let t = spawn_app(|s| {
        fast(s);
        s.simulator.behaviour.lost_callback_rate = 1.0;
    })
    .await;
    let ids = t.create_many("POLL", 20).await;
    for id in &ids {
        assert_eq!(t.pay(id).await.status, 202);
    }
    for id in &ids {
        let order = t.wait_status(id, "PAID").await;
        assert_eq!(order["payments"][0]["role"], "APPLIED");
        let audit = t.sim_audit(id).await;
        assert_eq!(audit["charges"].as_array().unwrap().len(), 1, "{audit}");
    }
    assert!(metric(&t, "paycore_payment_polls_total{result=\"settled\"}").await >= Some(20.0));
    assert_eq!(metric(&t, "paycore_sweep_found_total").await, Some(0.0));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_closes_created_orders_and_asks_the_channel_about_paying_ones() {
    let t = spawn_app(|s| {
        fast(s);
        // Polls would find the payment before expiry: keep them out of the way.
        s.orders.poll_schedule_ms = vec![60_000];
        s.simulator.behaviour.lost_callback_rate = 1.0;
    })
    .await;
    // Never paid at all: closed locally.
    let unpaid = create_expiring(&t, "EXP-CREATED", 100, 1).await;
    // Paid at the channel, callback lost: expiry asks and finds the money.
    let paid = create_expiring(&t, "EXP-PAID", 200, 1).await;
    assert_eq!(t.pay(&paid).await.status, 202);
    let closed = t.wait_status(&unpaid, "CLOSED").await;
    assert!(
        t.sim_audit(&unpaid).await["payments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(closed["payments"], json!([]));
    let order = t.wait_status(&paid, "PAID").await;
    assert_eq!(order["payments"][0]["amount"], 200);
    assert!(metric(&t, "paycore_order_closes_total{reason=\"expired\"}").await >= Some(1.0));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_paying_order_not_paid_at_the_channel_is_closed_there_too() {
    let t = spawn_app(|s| {
        fast(s);
        s.simulator.behaviour.pay_delay_ms_min = 60_000;
        s.simulator.behaviour.pay_delay_ms_max = 60_000;
    })
    .await;
    let id = create_expiring(&t, "EXP-NOTPAID", 300, 1).await;
    assert_eq!(t.pay(&id).await.status, 202);
    t.wait_status(&id, "CLOSED").await;
    let audit = t.sim_audit(&id).await;
    assert_eq!(audit["payments"][0]["status"], "CLOSED", "{audit}");
    assert!(audit["charges"].as_array().unwrap().is_empty());
    t.stop().await;
}

/// Opens a payment at the simulator for `order_id` directly, as a payer scanning an old QR
/// code would cause: the simulator pays it and calls paycore back.
async fn pay_at_simulator_directly(t: &TestApp, order_id: &str, amount: i64) {
    let body = p::CreatePaymentRequest {
        out_trade_no: order_id.into(),
        amount,
        currency: "CNY".into(),
        pay_method: "native".into(),
        auth_code: None,
        subject: None,
        notify_url: format!("{}/v1/callbacks/sim", t.base),
    };
    let bytes = serde_json::to_vec(&body).unwrap();
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    let secret = paycore_channel_sim::SimSettings::default().secret;
    let r = t
        .http
        .post(format!(
            "{}/sim/v1/payments",
            t.app().simulator_url().unwrap()
        ))
        .header(p::TIMESTAMP_HEADER, ts.to_string())
        .header(p::SIGNATURE_HEADER, p::sign(secret.as_bytes(), ts, &bytes))
        .header("content-type", "application/json")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_after_close_is_recorded_and_refunded_exactly_once_at_the_channel() {
    let t = spawn_app(|s| {
        fast(s);
        s.simulator.behaviour.duplicate_callback_rate = 1.0;
    })
    .await;
    let id = t.create("LATE-REFUND", 450).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    let closed = t
        .call("POST", &format!("/v1/orders/{id}/close"), None)
        .await;
    assert_eq!(closed.body["status"], "CLOSED");
    pay_at_simulator_directly(&t, &id, 450).await;
    let order = wait_for(
        &t,
        "automatic refund",
        Duration::from_secs(15),
        |o| o["payments"][0]["refund_status"] == "SUCCEEDED",
        &id,
    )
    .await;
    assert_eq!(order["status"], "CLOSED");
    assert_eq!(order["payments"][0]["role"], "EXTRA");
    assert_eq!(order["payments"][0]["reason"], "order_not_payable");
    let refund_id = order["payments"][0]["refund_id"]
        .as_str()
        .unwrap()
        .to_string();
    let refund = t
        .call("GET", &format!("/v1/refunds/{refund_id}"), None)
        .await;
    assert_eq!(refund.status, 200);
    assert_eq!(
        (
            refund.body["status"].as_str(),
            refund.body["automatic"].as_bool(),
            refund.body["amount"].as_i64()
        ),
        (Some("SUCCEEDED"), Some(true), Some(450))
    );
    // Duplicate callbacks keep arriving; the money goes back once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let audit = t.sim_audit(&id).await;
    assert_eq!(audit["charges"].as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(audit["refunds"].as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(audit["refunds"][0]["amount"], 450);
    assert_eq!(
        t.order(&id).await.body["payments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_partial_repeated_full_and_excessive() {
    let t = spawn_app(fast).await;
    let id = t.create("REFUND-1", 1000).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/orders/{id}/refunds");
    let early = t
        .call("POST", &path, Some(json!({"refund_no": "R0", "amount": 1})))
        .await;
    assert_eq!((early.status, early.code()), (409, "order_not_paid"));
    assert_eq!(t.pay(&id).await.status, 202);
    t.wait_status(&id, "PAID").await;

    let r1 = t
        .call(
            "POST",
            &path,
            Some(json!({"refund_no": "R1", "amount": 300, "reason": "meter misread"})),
        )
        .await;
    assert_eq!(r1.status, 202, "{:?}", r1.body);
    assert_eq!(r1.body["order_id"], id.as_str());
    let again = t
        .call(
            "POST",
            &path,
            Some(json!({"refund_no": "R1", "amount": 300})),
        )
        .await;
    assert_eq!(
        (again.status, &again.body["refund_id"]),
        (202, &r1.body["refund_id"])
    );
    let reused = t
        .call(
            "POST",
            &path,
            Some(json!({"refund_no": "R1", "amount": 200})),
        )
        .await;
    assert_eq!((reused.status, reused.code()), (409, "refund_no_reused"));
    let too_much = t
        .call(
            "POST",
            &path,
            Some(json!({"refund_no": "R2", "amount": 701})),
        )
        .await;
    assert_eq!(
        (too_much.status, too_much.code()),
        (422, "refund_exceeds_paid")
    );
    for bad in [
        json!({"refund_no": "R 2", "amount": 1}),
        json!({"refund_no": "R2", "amount": 0}),
        json!({"refund_no": "R2", "amount": -5}),
    ] {
        let r = t.call("POST", &path, Some(bad)).await;
        assert_eq!(
            (r.status, r.code()),
            (422, "invalid_request"),
            "{:?}",
            r.body
        );
    }
    let r1_id = r1.body["refund_id"].as_str().unwrap().to_string();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            t.call("GET", &format!("/v1/refunds/{r1_id}"), None)
                .await
                .body["status"]
                == "SUCCEEDED"
        })
        .await
    );
    let order = t.order(&id).await.body;
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("PAID"), Some(300))
    );

    let r2 = t
        .call(
            "POST",
            &path,
            Some(json!({"refund_no": "R2", "amount": 700})),
        )
        .await;
    assert_eq!(r2.status, 202);
    let order = t.wait_status(&id, "REFUNDED").await;
    assert_eq!(order["refunded_amount"], 1000);
    let more = t
        .call("POST", &path, Some(json!({"refund_no": "R3", "amount": 1})))
        .await;
    assert_eq!((more.status, more.code()), (422, "refund_exceeds_paid"));
    let audit = t.sim_audit(&id).await;
    let refunded: Vec<i64> = audit["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(refunded, vec![300, 700], "{audit}");

    // Another merchant sees none of it; a made-up id is 404 too.
    let foreign = t
        .call_as(
            "other",
            OTHER_SECRET,
            "GET",
            &format!("/v1/refunds/{r1_id}"),
            None,
        )
        .await;
    assert_eq!((foreign.status, foreign.code()), (404, "refund_not_found"));
    let other_refund = t
        .call_as(
            "other",
            OTHER_SECRET,
            "POST",
            &path,
            Some(json!({"refund_no": "X", "amount": 1})),
        )
        .await;
    assert_eq!(other_refund.status, 404);
    assert_eq!(
        t.call("GET", "/v1/refunds/rfd_nope_1", None).await.status,
        404
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_signed_by_another_channel_never_settles_an_order() {
    const OTHER_CHANNEL_SECRET: &str = "second-channel-secret-0123456789";
    let t = spawn_app(|s| {
        s.simulator.behaviour.pay_delay_ms_min = 60_000;
        s.simulator.behaviour.pay_delay_ms_max = 60_000;
        s.channels.insert(
            "sim2".into(),
            ChannelSettings {
                secret: Secret::new(OTHER_CHANNEL_SECRET),
                ..ChannelSettings::default()
            },
        );
        s.merchants[0].channels.push("sim2".into());
    })
    .await;
    let sim_secret = paycore_channel_sim::SimSettings::default().secret;
    // An order of channel sim2, and one of channel sim.
    let token = t.token().await;
    let mut body = TestApp::order_body(&token, "CH-B", 500);
    body["channel"] = json!("sim2");
    let on_b = t.call("POST", "/v1/orders", Some(body)).await.body["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    let on_a = t.create("CH-A", 500).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    for (path, secret, order) in [
        ("/v1/callbacks/sim", sim_secret.as_str(), &on_b),
        ("/v1/callbacks/sim2", OTHER_CHANNEL_SECRET, &on_a),
    ] {
        let cb = p::CallbackBody {
            event_id: "evt_x".into(),
            trade_no: "T-FORGED".into(),
            out_trade_no: order.clone(),
            amount: 500,
            currency: "CNY".into(),
            status: p::PaymentStatus::Success,
            paid_at: None,
            failure_reason: None,
        };
        let bytes = serde_json::to_vec(&cb).unwrap();
        let ts = time::OffsetDateTime::now_utc().unix_timestamp();
        let sig = p::sign(secret.as_bytes(), ts, &bytes);
        let r = t
            .raw(
                "POST",
                path,
                bytes,
                &[
                    (p::TIMESTAMP_HEADER, ts.to_string()),
                    (p::SIGNATURE_HEADER, sig),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "acknowledged like an unknown order");
        let o = t.order(order).await.body;
        assert_eq!(
            (o["status"].as_str(), o["version"].as_i64()),
            (Some("CREATED"), Some(1)),
            "{o}"
        );
        assert_eq!(o["payments"], json!([]));
    }
    assert_eq!(
        metric(
            &t,
            "paycore_channel_callbacks_total{channel=\"sim\",outcome=\"channel_mismatch\"}"
        )
        .await,
        Some(1.0)
    );
    t.stop().await;
}

/// With 4 live actors, 200 ms idle passivation, no read cache and a slow channel, pays and
/// closes race on 40 orders. Whatever wins, an order is never CLOSED after the payer was
/// charged, and every pay answer of one order names the same pay_serial_no.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_actor_per_order_under_a_tiny_cap_and_racing_pays_and_closes() {
    let t = spawn_app(|s| {
        fast(s);
        s.actors.max_live_orders = 4;
        s.actors.idle_passivate_ms = 200;
        s.actors.sweep_interval_ms = 50;
        s.actors.read_cache_orders = 0;
        s.simulator.behaviour.latency_ms_min = 100;
        s.simulator.behaviour.latency_ms_max = 400;
        s.simulator.behaviour.pay_delay_ms_min = 50;
        s.simulator.behaviour.pay_delay_ms_max = 300;
    })
    .await;
    let ids = t.create_many("RACE", 40).await;
    let t = std::sync::Arc::new(t);
    let mut tasks = Vec::new();
    for id in &ids {
        for op in ["pay", "pay", "close", "pay"] {
            let (app, id) = (t.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let r = if op == "pay" {
                    app.pay(&id).await
                } else {
                    app.call("POST", &format!("/v1/orders/{id}/close"), None)
                        .await
                };
                (
                    id,
                    op,
                    r.status,
                    r.code().to_string(),
                    r.body["pay_serial_no"].clone(),
                )
            }));
        }
    }
    let mut serials: std::collections::HashMap<String, Value> = Default::default();
    for task in tasks {
        let (id, op, status, code, serial) = task.await.unwrap();
        assert_ne!(
            code, "concurrent_update",
            "{op} on {id} raced another actor"
        );
        assert!(
            status < 500 || code == "channel_busy",
            "{op} on {id}: {status} {code}"
        );
        if op == "pay" && status == 202 {
            let first = serials.entry(id.clone()).or_insert(serial.clone());
            assert_eq!(*first, serial, "two pay_serial_no for {id}");
        }
    }
    for id in &ids {
        let order = wait_for(
            &t,
            "a final state",
            Duration::from_secs(20),
            |o| matches!(o["status"].as_str(), Some("PAID" | "CLOSED")),
            id,
        )
        .await;
        let charges = t.sim_audit(id).await["charges"].as_array().unwrap().len();
        match order["status"].as_str() {
            Some("CLOSED") => assert_eq!(charges, 0, "{id} closed after the payer was charged"),
            _ => assert_eq!(charges, 1, "{id}"),
        }
    }
    let Ok(t) = std::sync::Arc::try_unwrap(t) else {
        panic!("a request task still holds the app");
    };
    t.stop().await;
}

/// Found by attacking the callback endpoint: a timestamp near i64::MIN made `(now - ts).abs()`
/// wrap in release builds and pass the window check; a correctly signed but unreadable body
/// answered 401 (as if the signature were bad) instead of 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_callbacks_far_timestamps_and_malformed_signed_bodies() {
    let t = spawn_app(|_| {}).await;
    let id = t.create("HOSTILE-CB", 100).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = paycore_channel_sim::SimSettings::default().secret;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = serde_json::to_vec(&p::CallbackBody {
        event_id: "evt_x".into(),
        trade_no: "T1".into(),
        out_trade_no: id.clone(),
        amount: 100,
        currency: "CNY".into(),
        status: p::PaymentStatus::Success,
        paid_at: None,
        failure_reason: None,
    })
    .unwrap();
    let signed = |ts: i64, bytes: &[u8]| {
        vec![
            (p::TIMESTAMP_HEADER, ts.to_string()),
            (p::SIGNATURE_HEADER, p::sign(secret.as_bytes(), ts, bytes)),
        ]
    };
    for ts in [
        now.wrapping_sub(i64::MIN),
        i64::MIN,
        i64::MIN + 1,
        i64::MAX,
        now - 330,
        now + 330,
    ] {
        let r = t
            .raw(
                "POST",
                "/v1/callbacks/sim",
                body.clone(),
                &signed(ts, &body),
            )
            .await;
        assert_eq!(r.status, 401, "timestamp {ts} accepted");
    }
    for bad in [&b"not json"[..], br#"{"out_trade_no": 5}"#] {
        let r = t
            .raw("POST", "/v1/callbacks/sim", bad.to_vec(), &signed(now, bad))
            .await;
        assert_eq!(r.status, 400, "{:?}", r.body);
        assert_eq!(r.code(), "malformed_callback");
    }
    let mut open = serde_json::from_slice::<Value>(&body).unwrap();
    open["status"] = json!("NOTPAY");
    let bytes = serde_json::to_vec(&open).unwrap();
    let r = t
        .raw(
            "POST",
            "/v1/callbacks/sim",
            bytes.clone(),
            &signed(now, &bytes),
        )
        .await;
    assert_eq!(r.status, 400);
    let order = t.order(&id).await.body;
    assert_eq!(
        (order["status"].as_str(), order["version"].as_i64()),
        (Some("CREATED"), Some(1))
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_charge_is_recorded_and_refunded_by_its_own_trade_no() {
    let t = spawn_app(|s| {
        fast(s);
        s.simulator.behaviour.double_charge_rate = 1.0;
    })
    .await;
    let id = t.create("DOUBLE-1", 800).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(t.pay(&id).await.status, 202);
    let order = wait_for(
        &t,
        "the second charge refunded",
        Duration::from_secs(15),
        |o| o["payments"][1]["refund_status"] == "SUCCEEDED",
        &id,
    )
    .await;
    assert_eq!(order["status"], "PAID");
    assert_eq!(
        order["refunded_amount"], 0,
        "the order's own payment is untouched"
    );
    let (applied, extra) = (&order["payments"][0], &order["payments"][1]);
    assert_eq!(
        (applied["role"].as_str(), extra["role"].as_str()),
        (Some("APPLIED"), Some("EXTRA"))
    );
    assert_eq!(extra["reason"], "duplicate_charge");
    let audit = t.sim_audit(&id).await;
    assert_eq!(audit["charges"].as_array().unwrap().len(), 2);
    let refunds = audit["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 1, "{audit}");
    assert_eq!(refunds[0]["trade_no"], extra["channel_trade_no"]);
    assert_eq!(refunds[0]["amount"], 800);
    assert!(
        metric(
            &t,
            "paycore_extra_payments_total{reason=\"duplicate_charge\"}"
        )
        .await
            >= Some(1.0)
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_amount_is_recorded_refunded_and_never_paid() {
    let t = spawn_app(|s| {
        fast(s);
        s.simulator.behaviour.wrong_amount_rate = 1.0;
    })
    .await;
    let id = t.create("WRONG-1", 600).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(t.pay(&id).await.status, 202);
    let order = wait_for(
        &t,
        "the wrong charge refunded",
        Duration::from_secs(15),
        |o| o["payments"][0]["refund_status"] == "SUCCEEDED",
        &id,
    )
    .await;
    assert_eq!(order["status"], "FAILED");
    assert_eq!(order["payments"][0]["amount"], 601);
    assert_eq!(order["payments"][0]["reason"], "amount_mismatch");
    let audit = t.sim_audit(&id).await;
    assert_eq!(audit["refunds"].as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(audit["refunds"][0]["amount"], 601);
    t.stop().await;
}

/// The late payment's refund fails its first attempts (nothing recorded, or recorded with the
/// answer lost); the retries query first, and the money goes back exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_payment_refund_that_fails_first_is_retried_and_made_once() {
    for after_recording in [false, true] {
        let t = spawn_app(|s| {
            fast(s);
            s.simulator.behaviour.refund_errors_per_refund = 3;
            s.simulator.behaviour.refund_error_after_recording = after_recording;
        })
        .await;
        let id = t.create("LATE-RETRY", 250).await["order_id"]
            .as_str()
            .unwrap()
            .to_string();
        t.call("POST", &format!("/v1/orders/{id}/close"), None)
            .await;
        pay_at_simulator_directly(&t, &id, 250).await;
        let order = wait_for(
            &t,
            "the late payment refunded",
            Duration::from_secs(15),
            |o| o["payments"][0]["refund_status"] == "SUCCEEDED",
            &id,
        )
        .await;
        assert_eq!(order["status"], "CLOSED");
        let audit = t.sim_audit(&id).await;
        assert_eq!(audit["refunds"].as_array().unwrap().len(), 1, "{audit}");
        assert_eq!(audit["refunds"][0]["amount"], 250);
        t.stop().await;
    }
}
