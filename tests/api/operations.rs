//! Operations and the edges around the order flow: channel back-pressure, callback
//! authentication, late payments, events, metrics, OpenAPI, and shutdown.

use crate::common::*;
use paycore_channel_sim::protocol as p;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_channel_answers_channel_busy_and_leaves_orders_unchanged() {
    let t = spawn_app(|s| {
        let c = s.channels.get_mut("sim").unwrap();
        c.qps = 1;
        c.burst = 1;
        c.queue_timeout_ms = 100;
    })
    .await;
    let ids = t.create_many("BUSY", 6).await;
    let answers = futures::future::join_all(ids.iter().map(|id| t.pay(id))).await;
    let busy: Vec<_> = ids
        .iter()
        .zip(&answers)
        .filter(|(_, r)| r.status == 503)
        .collect();
    assert!(
        !busy.is_empty(),
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(answers.iter().any(|r| r.status == 202));
    for (id, r) in busy {
        assert_eq!(r.code(), "channel_busy");
        assert!(
            r.headers.get("retry-after").is_some(),
            "Retry-After missing"
        );
        let order = t.order(id).await.body;
        assert_eq!(
            (order["status"].as_str(), order["version"].as_i64()),
            (Some("CREATED"), Some(1))
        );
        assert_eq!(
            t.sim_audit(id).await["payments"].as_array().unwrap().len(),
            0,
            "busy pay reached the channel"
        );
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peak_within_the_queue_deadline_is_absorbed_by_queueing() {
    let t = spawn_app(|s| {
        let c = s.channels.get_mut("sim").unwrap();
        c.qps = 20;
        c.burst = 1;
        c.queue_timeout_ms = 5_000;
    })
    .await;
    let ids = t.create_many("PEAK", 10).await;
    // Ten at once against a 20/s channel with a burst of one: they wait their turn (about half a
    // second for the last) instead of being shed.
    let answers = futures::future::join_all(ids.iter().map(|id| t.pay(id))).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![202; 10]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_channel_queue_sheds_at_once() {
    let t = spawn_app(|s| {
        let c = s.channels.get_mut("sim").unwrap();
        c.qps = 1;
        c.burst = 1;
        c.queue_capacity = 2;
        // A deadline far beyond the test: any 503 can only come from the queue bound.
        c.queue_timeout_ms = 60_000;
    })
    .await;
    let ids = t.create_many("FULL", 6).await;
    let answers = futures::future::join_all(ids.iter().map(|id| t.pay(id))).await;
    let shed: Vec<_> = answers.iter().filter(|r| r.status == 503).collect();
    // At most two wait in the queue (one more may hold the burst slot); the rest are refused.
    assert!(
        shed.len() >= 3,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        shed.iter()
            .all(|r| r.code() == "channel_busy" && r.headers.contains_key("retry-after"))
    );
    t.stop().await;
}

fn signed_callback(secret: &str, body: &p::CallbackBody) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let bytes = serde_json::to_vec(body).unwrap();
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    let sig = p::sign(secret.as_bytes(), ts, &bytes);
    (
        bytes,
        vec![
            (p::TIMESTAMP_HEADER, ts.to_string()),
            (p::SIGNATURE_HEADER, sig),
        ],
    )
}

fn success(order_id: &str, amount: i64) -> p::CallbackBody {
    p::CallbackBody {
        event_id: "evt_test".into(),
        trade_no: "simT1".into(),
        out_trade_no: order_id.into(),
        amount,
        currency: "CNY".into(),
        status: p::PaymentStatus::Success,
        paid_at: None,
        failure_reason: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_with_bad_signatures_change_nothing() {
    let t = spawn_app(|s| {
        s.simulator.behaviour.pay_delay_ms_min = 60_000;
        s.simulator.behaviour.pay_delay_ms_max = 60_000;
    })
    .await;
    let id = t.create("CB-1", 700).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(t.pay(&id).await.status, 202);
    let (bytes, headers) = signed_callback("not-the-channel-secret", &success(&id, 700));
    let r = t.raw("POST", "/v1/callbacks/sim", bytes, &headers).await;
    assert_eq!(r.status, 401);
    let (bytes, _) = signed_callback("x", &success(&id, 700));
    assert_eq!(
        t.raw("POST", "/v1/callbacks/sim", bytes, &[]).await.status,
        401
    );
    assert_eq!(t.order(&id).await.body["status"], "PAYING");

    // Correctly signed, but naming another trade number than the channel gave at open (a
    // forged or second charge): recorded and refunded, never applied, never overwriting.
    let secret = paycore_channel_sim::SimSettings::default().secret;
    let trade_no = t.order(&id).await.body["channel_trade_no"]
        .as_str()
        .unwrap()
        .to_string();
    let (bytes, headers) = signed_callback(&secret, &success(&id, 700));
    let r = t.raw("POST", "/v1/callbacks/sim", bytes, &headers).await;
    assert_eq!(r.status, 200);
    let order = t.order(&id).await.body;
    assert_eq!(order["status"], "PAYING");
    assert_eq!(order["channel_trade_no"].as_str(), Some(trade_no.as_str()));
    assert_eq!(order["payments"][0]["role"], "EXTRA");
    assert_eq!(order["payments"][0]["reason"], "duplicate_charge");

    // The right one is applied, and answered in the channel's format; a repeat changes nothing.
    let mut right = success(&id, 700);
    right.trade_no = trade_no.clone();
    for _ in 0..2 {
        let (bytes, headers) = signed_callback(&secret, &right);
        let r = t.raw("POST", "/v1/callbacks/sim", bytes, &headers).await;
        assert_eq!((r.status, r.body["code"].as_str()), (200, Some("SUCCESS")));
    }
    let order = t.order(&id).await.body;
    assert_eq!(order["status"], "PAID");
    let version = order["version"].as_i64();
    let (bytes, headers) = signed_callback(&secret, &right);
    t.raw("POST", "/v1/callbacks/sim", bytes, &headers).await;
    assert_eq!(t.order(&id).await.body["version"].as_i64(), version);
    assert_eq!(order["payments"][1]["role"], "APPLIED");

    // A correctly signed callback with the wrong amount, or the wrong currency, is recorded
    // and refunded, never taken as payment.
    for (no, amount, currency) in [("CB-2", 1, "CNY"), ("CB-3", 700, "USD")] {
        let id = t.create(no, 700).await["order_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(t.pay(&id).await.status, 202);
        let mut wrong = success(&id, amount);
        wrong.currency = currency.into();
        wrong.trade_no = t.order(&id).await.body["channel_trade_no"]
            .as_str()
            .unwrap()
            .to_string();
        let (bytes, headers) = signed_callback(&secret, &wrong);
        let r = t.raw("POST", "/v1/callbacks/sim", bytes, &headers).await;
        assert_eq!(r.status, 200);
        let order = t.order(&id).await.body;
        assert_eq!(order["status"], "FAILED", "{order}");
        assert_eq!(order["payments"][0]["role"], "EXTRA");
        assert_eq!(order["payments"][0]["amount"], amount);
        assert!(order["payments"][0]["refund_id"].is_string());
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_arriving_after_close_is_recorded_not_lost() {
    let t = spawn_app(|_| {}).await;
    let id = t.create("LATE-1", 300).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    let closed = t
        .call("POST", &format!("/v1/orders/{id}/close"), None)
        .await;
    assert_eq!(closed.body["status"], "CLOSED");
    let secret = paycore_channel_sim::SimSettings::default().secret;
    let (bytes, headers) = signed_callback(&secret, &success(&id, 300));
    let r = t.raw("POST", "/v1/callbacks/sim", bytes, &headers).await;
    assert_eq!(r.status, 200);
    let order = t.order(&id).await.body;
    assert_eq!(order["status"], "CLOSED");
    assert_eq!(order["payments"][0]["amount"], 300);
    assert_eq!(order["payments"][0]["channel_trade_no"], "simT1");
    assert_eq!(order["payments"][0]["role"], "EXTRA");
    assert_eq!(order["payments"][0]["reason"], "order_not_payable");
    assert!(order["payments"][0]["refund_id"].is_string());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_stream_in_version_order() {
    let t = spawn_app(|_| {}).await;
    let mut log = t.app().consumer("test").await.unwrap();
    let id = t.create("EV-1", 100).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    t.pay(&id).await;
    t.wait_status(&id, "PAID").await;
    let events = events_until(&mut log, &id, "order.paid").await;
    let last_data = events.last().unwrap().data.to_value();
    let seen: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.event_type.clone(),
                e.version,
                e.data.to_value()["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("order.created".to_string(), 1, "CREATED".to_string()),
            // Version 2 is the pay intent: recorded, not published.
            ("order.paying".to_string(), 3, "PAYING".to_string()),
            ("order.paid".to_string(), 4, "PAID".to_string())
        ]
    );
    // An event's data is the contract's order view, exactly what a read of that version answers.
    assert_eq!(last_data, t.order(&id).await.body);
    assert_eq!(last_data["fulfillment"]["status"], "PENDING");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_openapi_and_probes() {
    let t = spawn_app(|_| {}).await;
    let id = t.create("OPS-1", 100).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    t.pay(&id).await;
    t.wait_status(&id, "PAID").await;
    assert_eq!(
        metric(&t, "paycore_orders{status=\"PAID\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&t, "paycore_orders{status=\"CREATED\"}").await,
        Some(0.0)
    );
    let text = metrics_text(&t).await;
    for name in [
        "paycore_http_request_duration_seconds_bucket",
        "paycore_storage_batch_writes_bucket",
        "paycore_storage_commit_duration_seconds_bucket",
        "paycore_storage_write_duration_seconds_bucket",
        "paycore_order_actors_live",
        "paycore_channel_requests_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(
        !text.contains(&id),
        "an order id leaked into a metric label"
    );

    let doc: serde_json::Value = t
        .http
        .get(format!("{}/openapi.json", t.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/submit-tokens",
        "/v1/orders",
        "/v1/orders/{order_id}",
        "/v1/orders/{order_id}/pay",
        "/v1/orders/{order_id}/close",
        "/v1/callbacks/{channel}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
    assert!(doc["components"]["schemas"]["OrderView"]["properties"]["amount"].is_object());
    let required = |schema: &str| -> Vec<String> {
        doc["components"]["schemas"][schema]["required"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let create = required("CreateOrderRequest");
    for field in [
        "submit_token",
        "merchant_order_no",
        "amount",
        "business_type",
        "channel",
    ] {
        assert!(
            create.contains(&field.to_string()),
            "{field} not required: {create:?}"
        );
    }
    for optional in ["currency", "subject", "notify_url", "expire_seconds"] {
        assert!(
            !create.contains(&optional.to_string()),
            "{optional} required"
        );
    }
    assert!(required("CreateRefundRequest").contains(&"refund_no".to_string()));
    // The look-up's merchant_order_no is a required query parameter (it was shown as a path
    // parameter, which no client generator can use).
    let lookup = &doc["paths"]["/v1/orders"]["get"]["parameters"][0];
    assert_eq!(
        (&lookup["name"], &lookup["in"], &lookup["required"]),
        (
            &serde_json::json!("merchant_order_no"),
            &serde_json::json!("query"),
            &serde_json::json!(true)
        )
    );

    let ready = t
        .http
        .get(format!("{}/readyz", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        (&ready["storage"], &ready["stream"]),
        (&"ok".into(), &"ok".into())
    );
    assert_eq!(ready["tasks"]["notifier"]["state"], "running", "{ready}");
    assert!(ready["consumers"]["notifier"]["lag"].is_u64(), "{ready}");
    let unknown = t.raw("GET", "/nope", vec![], &[]).await;
    assert_eq!((unknown.status, unknown.code()), (404, "not_found"));
    let wrong = t.raw("DELETE", "/v1/orders", vec![], &[]).await;
    assert_eq!((wrong.status, wrong.code()), (405, "method_not_allowed"));
    // A 405 names what the route takes (RFC 9110 requires the Allow header).
    for (method, path, status, allow) in [
        ("DELETE", "/v1/orders".to_string(), 405, Some("GET, POST")),
        ("GET", "/v1/submit-tokens".to_string(), 405, Some("POST")),
        ("POST", "/readyz".to_string(), 405, Some("GET")),
        ("GET", format!("/v1/orders/{id}/pay"), 405, Some("POST")),
        ("GET", format!("/v1/orders/{id}/refunds"), 405, Some("POST")),
        ("DELETE", format!("/v1/orders/{id}"), 405, Some("GET")),
        ("POST", "/v1/refunds/rfd_x".to_string(), 405, Some("GET")),
        ("POST", format!("/v1/orders/{id}/nonsense"), 404, None),
        ("GET", format!("/v1/orders/{id}/pay/more"), 404, None),
        ("GET", "/v1/callbacks/sim".to_string(), 405, Some("POST")),
        ("POST", "/v1/callbacks/sim/extra".to_string(), 404, None),
    ] {
        let r = t.raw(method, &path, vec![], &[]).await;
        assert_eq!(r.status, status, "{method} {path}: {:?}", r.body);
        assert!(
            r.body["error"]["code"].is_string(),
            "{method} {path}: not the contract's error form"
        );
        assert_eq!(
            r.headers.get("allow").and_then(|v| v.to_str().ok()),
            allow,
            "{method} {path}"
        );
    }
    // Latency is labelled by the contract's pattern, never by a concrete path.
    let text = metrics_text(&t).await;
    assert!(
        text.contains("route=\"/v1/orders/{order_id}/pay\""),
        "pay route label missing"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_keeps_every_acknowledged_write() {
    let t = spawn_app(|_| {}).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            t.create(&format!("SD-{i}"), 100).await["order_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    t.pay(&ids[0]).await;
    let dir = t.stop().await;
    // Start again on the same database.
    let app = paycore::app::Application::build({
        let mut s = test_settings(&dir);
        s.server.port = 0;
        s
    })
    .await
    .unwrap();
    let t2 = TestApp {
        base: format!("http://127.0.0.1:{}", app.port()),
        app: Some(app),
        http: reqwest::Client::new(),
        dir,
    };
    for id in &ids {
        assert_eq!(t2.order(id).await.status, 200, "{id} lost");
    }
    assert_eq!(t2.order(&ids[0]).await.body["status"], "PAYING");
    t2.stop().await;
}

/// Beyond `server.max_in_flight_requests` a request is answered 503 `overloaded` at once (a
/// storm is shed, not buffered in memory), while probes and metrics still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_bound_are_shed_at_once() {
    let t = spawn_app(|s| {
        s.server.max_in_flight_requests = 2;
        s.simulator.behaviour.latency_ms_min = 1_500;
        s.simulator.behaviour.latency_ms_max = 1_500;
    })
    .await;
    let mut ids = Vec::new();
    for no in ["SHED-1", "SHED-2"] {
        ids.push(
            t.create(no, 100).await["order_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let slow = async { tokio::join!(t.pay(&ids[0]), t.pay(&ids[1])) };
    let probe = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while metric(&t, "paycore_http_requests_in_flight").await != Some(2.0) {
            assert!(
                std::time::Instant::now() < deadline,
                "the two pays never were in flight together"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let shed = t.call("POST", "/v1/submit-tokens", None).await;
        assert_eq!(
            (shed.status, shed.code()),
            (503, "overloaded"),
            "{:?}",
            shed.body
        );
        assert!(shed.headers.contains_key("retry-after"));
        let health = t.raw("GET", "/healthz", vec![], &[]).await;
        assert_eq!(health.status, 200, "probes are never shed");
    };
    let ((a, b), ()) = tokio::join!(slow, probe);
    assert_eq!(
        (a.status, b.status),
        (202, 202),
        "{:?} {:?}",
        a.body,
        b.body
    );
    // The simulator's callbacks for the two payments take permits too: once they are done,
    // requests are admitted again.
    for id in &ids {
        t.wait_status(id, "PAID").await;
    }
    assert!(
        wait_until(Duration::from_secs(10), || async {
            metric(&t, "paycore_http_requests_in_flight").await == Some(0.0)
        })
        .await
    );
    assert_eq!(t.call("POST", "/v1/submit-tokens", None).await.status, 201);
    assert!(metric(&t, "paycore_http_requests_shed_total").await >= Some(1.0));
    t.stop().await;
}
