//! Signed merchant notifications end to end: a real local HTTP endpoint stands in for each
//! merchant, checks every signature with the merchant's secret and records what it got. Retry
//! schedules are shortened by settings; every wait polls with a deadline.

use crate::common::*;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use paycore::config::Settings;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest any notification wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

/// One request the merchant endpoint received.
#[derive(Debug, Clone)]
struct Received {
    notification_id: String,
    merchant: String,
    signature_ok: bool,
    event: Value,
    /// What the endpoint answered.
    status: u16,
}

/// What the endpoint does and what it saw.
struct EndpointState {
    secrets: HashMap<String, String>,
    /// Requests still to answer 500.
    fail_next: AtomicUsize,
    /// Time taken before each answer.
    delay: Duration,
    received: Mutex<Vec<Received>>,
    /// Requests being answered now, and the most there ever were at once.
    active: AtomicUsize,
    peak: AtomicUsize,
}

/// A merchant's notification endpoint on a local port.
struct Endpoint {
    port: u16,
    state: Arc<EndpointState>,
    server: actix_web::dev::ServerHandle,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<EndpointState>>,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let merchant = header("X-Paycore-Merchant");
    let (ts, nonce, signature) = (
        header("X-Paycore-Timestamp"),
        header("X-Paycore-Nonce"),
        header("X-Paycore-Signature"),
    );
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let fresh = ts
        .parse::<i64>()
        .is_ok_and(|t| (time::OffsetDateTime::now_utc().unix_timestamp() - t).abs() < 300);
    let signature_ok = fresh
        && nonce.len() == 32
        && nonce.bytes().all(|b| b.is_ascii_hexdigit())
        && header("Content-Type") == "application/json"
        && state
            .secrets
            .get(&merchant)
            .is_some_and(|secret| sign(secret, "POST", path, &ts, &nonce, &body) == signature);
    let now = state.active.fetch_add(1, Ordering::SeqCst) + 1;
    state.peak.fetch_max(now, Ordering::SeqCst);
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    state.active.fetch_sub(1, Ordering::SeqCst);
    let fail = state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if fail { 500 } else { 200 };
    state.received.lock().unwrap().push(Received {
        notification_id: header("X-Paycore-Notification-Id"),
        merchant,
        signature_ok,
        event: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status,
    });
    if fail {
        HttpResponse::InternalServerError().body("not now")
    } else {
        HttpResponse::Ok().body("ok")
    }
}

impl Endpoint {
    /// Starts on `listener`: fails the first `fail_first` requests with 500, answers each after
    /// `delay`.
    fn start(listener: std::net::TcpListener, fail_first: usize, delay: Duration) -> Self {
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(EndpointState {
            secrets: HashMap::from([
                ("demo".to_string(), DEMO_SECRET.to_string()),
                ("other".to_string(), OTHER_SECRET.to_string()),
            ]),
            fail_next: AtomicUsize::new(fail_first),
            delay,
            received: Mutex::new(Vec::new()),
            active: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            port,
            state,
            server: handle,
        }
    }

    fn new(fail_first: usize, delay: Duration) -> Self {
        Self::start(
            paycore::app::listen("127.0.0.1", 0, 128).unwrap(),
            fail_first,
            delay,
        )
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/paycore/notify?shop=7", self.port)
    }

    /// The most requests it was answering at once.
    fn peak(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Accepted requests by notification id.
    fn accepted(&self) -> HashMap<String, usize> {
        let mut by_id = HashMap::new();
        for r in self.received().iter().filter(|r| r.status == 200) {
            *by_id.entry(r.notification_id.clone()).or_insert(0) += 1;
        }
        by_id
    }

    async fn stop(self) {
        self.server.stop(false).await;
    }
}

/// Loopback notify URLs allowed, a short schedule, a fast tick.
fn notify_fast(s: &mut Settings) {
    s.notifications.allow_loopback = true;
    s.notifications.retry_schedule_ms = vec![50, 50, 50];
    s.notifications.tick_ms = 20;
}

fn secret_of(merchant: &str) -> &'static str {
    if merchant == "demo" {
        DEMO_SECRET
    } else {
        OTHER_SECRET
    }
}

/// Creates an order of `merchant` with `notify_url` (or none); answers the create response.
async fn create_with_url(t: &TestApp, merchant: &str, no: &str, url: Option<&str>) -> Resp {
    let secret = secret_of(merchant);
    let token = t
        .call_as(merchant, secret, "POST", "/v1/submit-tokens", None)
        .await;
    assert_eq!(token.status, 201, "{:?}", token.body);
    let mut body = TestApp::order_body(token.body["token"].as_str().unwrap(), no, 100);
    if let Some(url) = url {
        body["notify_url"] = json!(url);
    }
    t.call_as(merchant, secret, "POST", "/v1/orders", Some(body))
        .await
}

/// Creates and closes an order of `merchant` notifying `url`; answers its id.
async fn create_and_close(t: &TestApp, merchant: &str, no: &str, url: &str) -> String {
    let r = create_with_url(t, merchant, no, Some(url)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["order_id"].as_str().unwrap().to_string();
    let closed = t
        .call_as(
            merchant,
            secret_of(merchant),
            "POST",
            &format!("/v1/orders/{id}/close"),
            None,
        )
        .await;
    assert_eq!(closed.status, 200, "{:?}", closed.body);
    id
}

async fn notifications_of(t: &TestApp, merchant: &str, order_id: &str) -> Resp {
    t.call_as(
        merchant,
        secret_of(merchant),
        "GET",
        &format!("/v1/notifications?order_id={order_id}"),
        None,
    )
    .await
}

/// Waits until every notification of the order has `status`; answers the list.
async fn wait_all(t: &TestApp, merchant: &str, order_id: &str, status: &str) -> Vec<Value> {
    let last = std::cell::RefCell::new(Value::Null);
    let reached = wait_until(WAIT, || async {
        let r = notifications_of(t, merchant, order_id).await;
        let done = r.status == 200
            && r.body
                .as_array()
                .is_some_and(|a| !a.is_empty() && a.iter().all(|n| n["status"] == status));
        *last.borrow_mut() = r.body;
        done
    })
    .await;
    let last = last.into_inner();
    assert!(
        reached,
        "notifications of {order_id} never all {status}: {last}"
    );
    last.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_retried_until_it_accepts_with_a_stable_id_and_valid_signatures() {
    let endpoint = Endpoint::new(2, Duration::ZERO);
    let t = spawn_app(notify_fast).await;
    let r = create_with_url(&t, "demo", "NTF-RETRY", Some(&endpoint.url())).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["order_id"].as_str().unwrap().to_string();
    assert_eq!(t.pay(&id).await.status, 202);
    t.wait_status(&id, "PAID").await;

    let list = wait_all(&t, "demo", &id, "DELIVERED").await;
    assert_eq!(
        list.len(),
        1,
        "only order.paid is subscribed by default: {list:?}"
    );
    let n = &list[0];
    assert_eq!(
        (
            &n["type"],
            &n["attempts"],
            &n["last_status"],
            &n["next_attempt_at"]
        ),
        (&json!("order.paid"), &json!(3), &json!(200), &Value::Null)
    );
    let got = endpoint.received();
    assert_eq!(
        got.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    for r in &got {
        assert!(r.signature_ok, "signature does not verify: {r:?}");
        assert_eq!(r.merchant, "demo");
        assert_eq!(r.notification_id, n["notification_id"].as_str().unwrap());
        assert_eq!(r.event["event_id"], n["event_id"]);
        assert_eq!(
            (
                &r.event["type"],
                &r.event["order_id"],
                &r.event["data"]["status"]
            ),
            (&json!("order.paid"), &json!(id), &json!("PAID"))
        );
        for field in ["merchant_id", "version", "occurred_at"] {
            assert!(!r.event[field].is_null(), "{field} missing: {}", r.event);
        }
    }
    assert!(metric(&t, "paycore_notifications_total{outcome=\"failed\"}").await >= Some(2.0));
    assert!(metric(&t, "paycore_notifications_total{outcome=\"delivered\"}").await >= Some(1.0));
    assert!(
        metrics_text(&t)
            .await
            .contains("paycore_notification_delivery_seconds_count")
    );
    t.stop().await;
    endpoint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_orders_notifications_arrive_in_version_order_while_the_first_is_retried() {
    let endpoint = Endpoint::new(3, Duration::ZERO);
    let t = spawn_app(|s| {
        notify_fast(s);
        s.notifications.retry_schedule_ms = vec![400, 400, 400, 400];
        s.orders.refund_retry_ms = vec![100, 200, 300];
        s.timers.tick_ms = 20;
    })
    .await;
    let r = create_with_url(&t, "demo", "NTF-ORDER", Some(&endpoint.url())).await;
    let id = r.body["order_id"].as_str().unwrap().to_string();
    assert_eq!(t.pay(&id).await.status, 202);
    t.wait_status(&id, "PAID").await;
    let refund = t
        .call(
            "POST",
            &format!("/v1/orders/{id}/refunds"),
            Some(json!({"refund_no": "R1", "amount": 100})),
        )
        .await;
    assert_eq!(refund.status, 202, "{:?}", refund.body);
    t.wait_status(&id, "REFUNDED").await;

    // The refund's notification exists while order.paid is still being retried.
    let seen = std::cell::RefCell::new(Value::Null);
    let both = wait_until(WAIT, || async {
        let r = notifications_of(&t, "demo", &id).await;
        let two = r.body.as_array().is_some_and(|a| a.len() == 2);
        *seen.borrow_mut() = r.body;
        two
    })
    .await;
    let seen = seen.into_inner();
    assert!(both, "{seen}");
    assert_eq!(seen[0]["type"], "order.paid");
    assert_eq!(seen[1]["type"], "refund.succeeded");
    assert_eq!(
        seen[0]["status"], "PENDING",
        "order.paid should still be failing: {seen}"
    );

    let list = wait_all(&t, "demo", &id, "DELIVERED").await;
    assert_eq!(list.len(), 2);
    let got = endpoint.received();
    let types: Vec<(&str, u16)> = got
        .iter()
        .map(|r| (r.event["type"].as_str().unwrap_or(""), r.status))
        .collect();
    assert_eq!(
        types,
        vec![
            ("order.paid", 500),
            ("order.paid", 500),
            ("order.paid", 500),
            ("order.paid", 200),
            ("refund.succeeded", 200)
        ]
    );
    assert!(got[3].event["version"].as_u64() < got[4].event["version"].as_u64());
    assert!(got.iter().all(|r| r.signature_ok));
    t.stop().await;
    endpoint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_makes_a_dead_letter_that_redeliver_sends_once_it_is_up() {
    // A port nobody listens on (yet): connections are refused.
    let reserved = paycore::app::listen("127.0.0.1", 0, 128).unwrap();
    let port = reserved.local_addr().unwrap().port();
    drop(reserved);
    let url = format!("http://127.0.0.1:{port}/paycore/notify?shop=7");
    let t = spawn_app(notify_fast).await;
    let id = create_and_close(&t, "demo", "NTF-DEAD", &url).await;

    let list = wait_all(&t, "demo", &id, "DEAD").await;
    assert_eq!(list.len(), 1);
    let n = &list[0];
    assert_eq!(
        (
            &n["type"],
            &n["attempts"],
            &n["last_status"],
            &n["next_attempt_at"]
        ),
        (
            &json!("order.closed"),
            &json!(4),
            &Value::Null,
            &Value::Null
        ),
        "one attempt and three retries: {n}"
    );
    assert!(
        n["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connection")),
        "{n}"
    );
    assert!(metric(&t, "paycore_notifications_total{outcome=\"dead\"}").await >= Some(1.0));

    let endpoint = Endpoint::start(
        paycore::app::listen("127.0.0.1", port, 128).unwrap(),
        0,
        Duration::ZERO,
    );
    let ntf = n["notification_id"].as_str().unwrap();
    let again = t
        .call("POST", &format!("/v1/notifications/{ntf}/redeliver"), None)
        .await;
    assert_eq!(again.status, 202, "{:?}", again.body);
    assert_eq!(
        (&again.body["notification_id"], &again.body["status"]),
        (&json!(ntf), &json!("PENDING"))
    );
    assert!(again.body["next_attempt_at"].is_string());
    let list = wait_all(&t, "demo", &id, "DELIVERED").await;
    assert_eq!(
        (&list[0]["attempts"], &list[0]["last_status"]),
        (&json!(5), &json!(200))
    );
    let got = endpoint.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].signature_ok);
    assert_eq!(got[0].notification_id, ntf);
    t.stop().await;
    endpoint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_gets_at_most_its_bound_of_requests_at_once() {
    let slow = Endpoint::new(0, Duration::from_millis(300));
    let t = spawn_app(|s| {
        notify_fast(s);
        s.notifications.max_in_flight_per_merchant = 2;
    })
    .await;
    let mut orders = Vec::new();
    for i in 0..6 {
        orders.push(create_and_close(&t, "demo", &format!("BOUND-{i}"), &slow.url()).await);
    }
    for id in &orders {
        let list = wait_all(&t, "demo", id, "DELIVERED").await;
        assert_eq!(list[0]["attempts"], 1);
    }
    assert_eq!(slow.accepted().len(), 6, "{:?}", slow.received());
    // Six answers of 300 ms each: two at a time, never three.
    assert_eq!(slow.peak(), 2, "requests at once");
    t.stop().await;
    slow.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_merchant_does_not_delay_a_fast_one() {
    let slow = Endpoint::new(0, Duration::from_secs(2));
    let fast = Endpoint::new(0, Duration::ZERO);
    let t = spawn_app(|s| {
        notify_fast(s);
        s.notifications.max_in_flight_per_merchant = 1;
    })
    .await;
    let mut slow_orders = Vec::new();
    let mut fast_orders = Vec::new();
    for i in 0..3 {
        slow_orders.push(create_and_close(&t, "demo", &format!("SLOW-{i}"), &slow.url()).await);
        fast_orders.push(create_and_close(&t, "other", &format!("FAST-{i}"), &fast.url()).await);
    }
    let all_fast = wait_until(WAIT, || async { fast.accepted().len() == 3 }).await;
    assert!(all_fast, "fast merchant got {:?}", fast.received());
    // By counts, at that moment: the slow merchant has had at most one answer per 2 s, one at
    // a time, and still has notifications waiting.
    let slow_got = slow.received().len();
    let mut slow_pending = 0;
    for id in &slow_orders {
        let r = notifications_of(&t, "demo", id).await;
        slow_pending += r
            .body
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["status"] == "PENDING")
            .count();
    }
    assert!(slow_got < 3, "slow merchant already answered {slow_got}");
    assert!(slow_pending >= 1, "slow merchant has nothing pending");
    for id in &fast_orders {
        let list = wait_all(&t, "other", id, "DELIVERED").await;
        assert_eq!(list[0]["attempts"], 1);
    }
    assert!(
        fast.received()
            .iter()
            .all(|r| r.signature_ok && r.merchant == "other")
    );
    t.stop().await;
    slow.stop().await;
    fast.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_routes_see_only_the_merchants_own_and_refused_urls_are_422() {
    let endpoint = Endpoint::new(0, Duration::ZERO);
    let t = spawn_app(notify_fast).await;
    let id = create_and_close(&t, "demo", "NTF-OWN", &endpoint.url()).await;
    let list = wait_all(&t, "demo", &id, "DELIVERED").await;
    let ntf = list[0]["notification_id"].as_str().unwrap().to_string();

    let theirs = notifications_of(&t, "other", &id).await;
    assert_eq!((theirs.status, theirs.code()), (404, "order_not_found"));
    let redeliver = format!("/v1/notifications/{ntf}/redeliver");
    let theirs = t
        .call_as("other", OTHER_SECRET, "POST", &redeliver, None)
        .await;
    assert_eq!(
        (theirs.status, theirs.code()),
        (404, "notification_not_found")
    );
    for bad in [
        "/v1/notifications/ntf_nope/redeliver",
        "/v1/notifications/ord_01ARZ3NDEKTSV4RRFFQ69G5FAV/redeliver",
    ] {
        let r = t.call("POST", bad, None).await;
        assert_eq!(
            (r.status, r.code()),
            (404, "notification_not_found"),
            "{bad}"
        );
    }
    let unknown = notifications_of(&t, "demo", "ord_01ARZ3NDEKTSV4RRFFQ69G5FAV").await;
    assert_eq!((unknown.status, unknown.code()), (404, "order_not_found"));
    let missing = t.call("GET", "/v1/notifications", None).await;
    assert_eq!((missing.status, missing.field()), (422, "order_id"));
    let wrong = t.call("GET", &redeliver, None).await;
    assert_eq!(wrong.status, 405);
    let wrong = t.call("POST", "/v1/notifications", None).await;
    assert_eq!(wrong.status, 405);
    // A delivered one redelivered goes out once more, with the same id.
    let again = t.call("POST", &redeliver, None).await;
    assert_eq!(again.status, 202, "{:?}", again.body);
    let delivered_twice =
        wait_until(WAIT, || async { endpoint.accepted().get(&ntf) == Some(&2) }).await;
    assert!(delivered_twice, "{:?}", endpoint.received());

    // Loopback allowed here: the same URL refused where it is not.
    let ok = create_with_url(&t, "demo", "NTF-V6", Some("http://[::1]:9/x")).await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
    let strict = spawn_app(|_| {}).await;
    let long = format!("https://merchant.example/{}", "x".repeat(513 - 25));
    assert_eq!(long.len(), 513);
    for (i, url) in [
        "http://10.0.0.1/x",
        "http://[::1]/x",
        "http://127.0.0.1:9/x",
        "http://localhost/x",
        "http://169.254.169.254/latest",
        "ftp://x",
        long.as_str(),
    ]
    .into_iter()
    .enumerate()
    {
        let r = create_with_url(&strict, "demo", &format!("BAD-URL-{i}"), Some(url)).await;
        assert_eq!(
            (r.status, r.code(), r.field()),
            (422, "invalid_request", "notify_url"),
            "{url}: {:?}",
            r.body
        );
    }
    let fine = create_with_url(
        &strict,
        "demo",
        "GOOD-URL",
        Some("https://merchant.example/n"),
    )
    .await;
    assert_eq!(fine.status, 201, "{:?}", fine.body);

    let doc = t.raw("GET", "/openapi.json", vec![], &[]).await.body;
    assert!(doc["paths"]["/v1/notifications"]["get"].is_object());
    assert!(doc["paths"]["/v1/notifications/{notification_id}/redeliver"]["post"].is_object());
    let view = &doc["components"]["schemas"]["NotificationView"]["properties"];
    for field in [
        "notification_id",
        "event_id",
        "type",
        "status",
        "attempts",
        "last_status",
        "next_attempt_at",
    ] {
        assert!(
            view[field].is_object(),
            "NotificationView lacks {field}: {view}"
        );
    }
    let text = metrics_text(&t).await;
    assert!(
        text.contains("route=\"/v1/notifications\""),
        "route label missing"
    );
    assert!(text.contains("paycore_notifications_pending"));
    strict.stop().await;
    t.stop().await;
    endpoint.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifier_cursor_survives_a_restart_nothing_twice_nothing_lost() {
    let endpoint = Endpoint::new(0, Duration::ZERO);
    let t = spawn_app(notify_fast).await;
    let mut orders = Vec::new();
    for i in 0..3 {
        orders.push(create_and_close(&t, "demo", &format!("RS-A{i}"), &endpoint.url()).await);
    }
    let first = wait_until(WAIT, || async { endpoint.accepted().len() == 3 }).await;
    assert!(first, "{:?}", endpoint.received());
    // More events, then a stop at once: some are taken in or delivered, some wait in storage.
    for i in 0..3 {
        orders.push(create_and_close(&t, "demo", &format!("RS-B{i}"), &endpoint.url()).await);
    }
    let before = t.app().store().cursor("notifier", 0).await.unwrap();
    assert!(before > 0);
    let dir = t.stop().await;

    let app = paycore::app::Application::build({
        let mut s = test_settings(&dir);
        notify_fast(&mut s);
        s
    })
    .await
    .unwrap();
    let t = TestApp {
        base: format!("http://127.0.0.1:{}", app.port()),
        app: Some(app),
        http: reqwest::Client::new(),
        dir,
    };
    assert!(t.app().store().cursor("notifier", 0).await.unwrap() >= before);
    let all = wait_until(WAIT, || async { endpoint.accepted().len() == 6 }).await;
    assert!(all, "{:?}", endpoint.received());
    for id in &orders {
        let list = wait_all(&t, "demo", id, "DELIVERED").await;
        assert_eq!(list.len(), 1);
    }
    // One more event after the restart: notified too, and still nothing twice.
    orders.push(create_and_close(&t, "demo", "RS-C", &endpoint.url()).await);
    let seven = wait_until(WAIT, || async { endpoint.accepted().len() == 7 }).await;
    assert!(seven, "{:?}", endpoint.received());
    let accepted = endpoint.accepted();
    assert!(
        accepted.values().all(|&n| n == 1),
        "notified twice: {accepted:?}"
    );
    assert_eq!(endpoint.received().len(), 7);
    t.stop().await;
    endpoint.stop().await;
}
