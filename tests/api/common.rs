//! Test harness: the real application on port 0 against a temp directory with the in-process
//! simulator, a signing HTTP client, and polling with deadlines (never fixed sleeps).

use paycore::app::Application;
use paycore::config::{MerchantSettings, Secret, Settings};
use serde_json::{Value, json};
use std::future::Future;
use std::time::{Duration, Instant};

pub const DEMO_SECRET: &str = "demo-secret-for-tests-0123456789";
pub const OTHER_SECRET: &str = "other-secret-for-tests-012345678";

pub struct TestApp {
    pub app: Option<Application>,
    pub base: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub fn test_settings(dir: &tempfile::TempDir) -> Settings {
    let mut s = Settings::default();
    s.server.port = 0;
    s.server.workers = 2;
    s.simulator.port = 0;
    s.simulator.biller_port = 0;
    s.simulator.behaviour.pay_delay_ms_min = 10;
    s.simulator.behaviour.pay_delay_ms_max = 40;
    s.simulator.behaviour.callback_retry_base_ms = 50;
    s.storage.sqlite.path = dir.path().join("paycore.db").to_string_lossy().into_owned();
    cql_backend(&mut s);
    s.merchants = vec![
        MerchantSettings {
            id: "demo".into(),
            secret: Secret::new(DEMO_SECRET),
            channels: vec!["sim".into()],
            rate_limit_per_sec: 100_000,
            rate_limit_burst: 100_000,
            default_expire_seconds: None,
            poll_schedule_ms: None,
            biller: None,
            notify_url: None,
            notify_events: None,
        },
        MerchantSettings {
            id: "other".into(),
            secret: Secret::new(OTHER_SECRET),
            channels: vec!["sim".into()],
            rate_limit_per_sec: 100_000,
            rate_limit_burst: 100_000,
            default_expire_seconds: None,
            poll_schedule_ms: None,
            biller: None,
            notify_url: None,
            notify_events: None,
        },
    ];
    s
}

/// The variable naming a CQL server: when set, the suite runs on the CQL backend, each app in
/// a keyspace of its own (`.ci/run` sets it for the lifecycle and settlement tests).
pub const CQL_ENV: &str = "PAYCORE_TEST_CQL";

/// Points the settings at the CQL server `PAYCORE_TEST_CQL` names, in a new keyspace.
pub fn cql_backend(s: &mut Settings) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let Ok(contact) = std::env::var(CQL_ENV) else {
        return;
    };
    s.storage.backend = "scylla".into();
    s.storage.scylla.contact_points = vec![contact];
    s.storage.scylla.dialect = paycore::config::scylla::Dialect::Cassandra;
    s.storage.scylla.consistency = paycore::config::scylla::Consistency::One;
    s.storage.scylla.keyspace = format!(
        "paycore_http_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
}

pub async fn spawn_app(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = test_settings(&dir);
    tweak(&mut s);
    let app = Application::build(s).await.expect("app starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    TestApp {
        app: Some(app),
        base,
        http: reqwest::Client::new(),
        dir,
    }
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn field(&self) -> &str {
        self.body["error"]["field"].as_str().unwrap_or("")
    }
}

pub fn sign(secret: &str, method: &str, path: &str, ts: &str, nonce: &str, body: &[u8]) -> String {
    paycore::http::auth::sign(
        secret.as_bytes(),
        &paycore::http::auth::canonical(method, path, ts, nonce, body),
    )
}

pub fn nonce() -> String {
    format!("n{:032x}", rand_u128())
}

fn rand_u128() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static C: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    t ^ ((C.fetch_add(1, Ordering::Relaxed) as u128) << 64)
}

impl TestApp {
    pub fn app(&self) -> &Application {
        self.app.as_ref().expect("app running")
    }

    /// A raw request with explicit headers (for auth tests).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Resp {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{}", self.base, path))
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let r = req.send().await.expect("request sent");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            body,
            headers,
        }
    }

    pub async fn call_as(
        &self,
        merchant: &str,
        secret: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        let bytes = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        self.signed_bytes(merchant, secret, method, path, bytes)
            .await
    }

    pub async fn signed_bytes(
        &self,
        merchant: &str,
        secret: &str,
        method: &str,
        path: &str,
        bytes: Vec<u8>,
    ) -> Resp {
        let ts = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
        let n = nonce();
        let sig = sign(secret, method, path, &ts, &n, &bytes);
        self.raw(
            method,
            path,
            bytes,
            &[
                ("X-Paycore-Merchant", merchant.to_string()),
                ("X-Paycore-Timestamp", ts),
                ("X-Paycore-Nonce", n),
                ("X-Paycore-Signature", sig),
                ("Content-Type", "application/json".to_string()),
            ],
        )
        .await
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.call_as("demo", DEMO_SECRET, method, path, body).await
    }

    pub async fn token(&self) -> String {
        let r = self.call("POST", "/v1/submit-tokens", None).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body["token"].as_str().unwrap().to_string()
    }

    pub fn order_body(token: &str, no: &str, amount: i64) -> Value {
        json!({"submit_token": token, "merchant_order_no": no, "amount": amount, "business_type": "BillBuy", "channel": "sim"})
    }

    pub async fn create(&self, no: &str, amount: i64) -> Value {
        let t = self.token().await;
        let r = self
            .call("POST", "/v1/orders", Some(Self::order_body(&t, no, amount)))
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body
    }

    /// Creates `n` orders numbered `{prefix}-{i}`; returns their ids.
    pub async fn create_many(&self, prefix: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let order = self.create(&format!("{prefix}-{i}"), 100).await;
            ids.push(order["order_id"].as_str().expect("order_id").to_string());
        }
        ids
    }

    pub async fn order(&self, id: &str) -> Resp {
        self.call("GET", &format!("/v1/orders/{id}"), None).await
    }

    pub async fn pay(&self, id: &str) -> Resp {
        self.call(
            "POST",
            &format!("/v1/orders/{id}/pay"),
            Some(json!({"pay_method": "native"})),
        )
        .await
    }

    /// What the simulator charged for an order (its own audit records).
    pub async fn sim_audit(&self, order_id: &str) -> Value {
        let base = self.app().simulator_url().unwrap();
        self.get_json(&format!("{base}/sim/v1/payments?out_trade_no={order_id}"))
            .await
    }

    /// What the business-system simulator recorded for an order (its own audit).
    pub async fn biller_audit(&self, order_id: &str) -> Value {
        let base = self.app().biller_simulator_url().unwrap();
        self.get_json(&format!("{base}/biller/v1/write-offs?order_id={order_id}"))
            .await
    }

    async fn get_json(&self, url: &str) -> Value {
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let last = self.order(id).await.body;
            if last["status"] == status {
                return last;
            }
            assert!(
                Instant::now() < deadline,
                "order {id} never reached {status}; last seen {last}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
        self.dir
    }
}

/// Polls the order until `f` holds; fails naming `what` after `limit`.
pub async fn wait_for(
    t: &TestApp,
    what: &str,
    limit: Duration,
    f: impl Fn(&Value) -> bool,
    id: &str,
) -> Value {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let body = t.order(id).await.body;
        if f(&body) {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never happened for {id}; last seen {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `cond` until it holds or `limit` passes.
pub async fn wait_until<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The whole `/metrics` exposition.
pub async fn metrics_text(t: &TestApp) -> String {
    t.http
        .get(format!("{}/metrics", t.base))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("/metrics body")
}

/// The value of one sample line of `/metrics`, e.g. `paycore_orders{status="PAID"}`.
pub async fn metric(t: &TestApp, sample: &str) -> Option<f64> {
    metrics_text(t)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
}

/// The events of order `order_id` a durable log consumer reads, in log order, until one of
/// type `last` (or panics after 10 s without it). Commits what it read.
pub async fn events_until(
    log: &mut paycore::streams::consumer::LogConsumer,
    order_id: &str,
    last: &str,
) -> Vec<paycore::domain::Event> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no {last} event for {order_id} in time; saw {:?}",
            seen.iter()
                .map(|e: &paycore::domain::Event| e.event_type.clone())
                .collect::<Vec<_>>()
        );
        let batch = log.poll(256, Duration::from_millis(500)).await.unwrap();
        let Some(through) = batch.last().map(|e| e.position()) else {
            continue;
        };
        for e in batch {
            if e.event.order_id == order_id {
                let done = e.event.event_type == last;
                seen.push((*e.event).clone());
                if done {
                    log.commit(through).await.unwrap();
                    return seen;
                }
            }
        }
        log.commit(through).await.unwrap();
    }
}
