//! Durability under kill -9: a create load runs against the real binary, the process is killed
//! with SIGKILL mid-load, and after a restart every order that got a 201 (and every pay that got
//! a 202) is there with its acknowledged status. And timers survive it: polls, refund retries
//! and expiry closes pending at the kill all complete after the restart, and so do write-off
//! retries and merchant notifications waiting for their retry. After each, `paycore ledger
//! verify` passes: the ledger's batches and cursor commit together, so a kill in the middle of
//! booking leaves nothing half-booked.

mod support;

use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Reaped, free_port};

const SECRET: &str = "demo-secret-change-me";

/// The variable naming a CQL server: when set, paycore runs on the CQL backend (`.ci/run` sets
/// it for a second run of these tests).
const CQL_ENV: &str = "PAYCORE_TEST_CQL";

/// The keyspace standing for the database `db` on the CQL backend.
fn keyspace_of(db: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    db.hash(&mut h);
    format!("paycore_crash_{:016x}", h.finish())
}

/// Points paycore at the CQL server `PAYCORE_TEST_CQL` names, when set: a keyspace per
/// database path, so a restart finds its data.
fn on_backend(c: &mut Command, db: &str) {
    // paycore reads every PAYCORE_ variable as a setting: not the tests' own.
    c.env_remove(CQL_ENV)
        .env_remove(LOG_DIR_ENV)
        .env_remove(LOG_FILTER_ENV);
    if let Ok(contact) = std::env::var(CQL_ENV) {
        c.env("PAYCORE_STORAGE__BACKEND", "scylla")
            .env(
                "PAYCORE_STORAGE__SCYLLA__CONTACT_POINTS",
                format!("[\"{contact}\"]"),
            )
            .env("PAYCORE_STORAGE__SCYLLA__DIALECT", "cassandra")
            .env("PAYCORE_STORAGE__SCYLLA__CONSISTENCY", "one")
            // The killed paycore's owner lease runs out before the restart can take it: the
            // shortest lease the request timeout (5 s) allows.
            .env("PAYCORE_STORAGE__SCYLLA__OWNER_LEASE_MS", "15000")
            .env("PAYCORE_STORAGE__SCYLLA__KEYSPACE", keyspace_of(db));
    }
}

/// Names a directory for the children's output (paycore logs to stdout): when set, each
/// process appends to `<dir>/<command>-<port>.log`, to read after a failure; otherwise the
/// output is discarded.
const LOG_DIR_ENV: &str = "PAYCORE_TEST_LOG_DIR";

/// The children's log filter: `warn` unless `PAYCORE_TEST_RUST_LOG` says otherwise.
const LOG_FILTER_ENV: &str = "PAYCORE_TEST_RUST_LOG";

fn log_filter() -> String {
    std::env::var(LOG_FILTER_ENV).unwrap_or_else(|_| "warn".into())
}

fn child_output(c: &mut Command, cmd: &str, port: u16) {
    let file = std::env::var(LOG_DIR_ENV).ok().map(|dir| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("{dir}/{cmd}-{port}.log"))
            .expect("open the log file")
    });
    match file {
        Some(f) => {
            let err = f.try_clone().expect("clone the log file");
            c.stdout(f).stderr(err);
        }
        None => {
            c.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
}

fn start(db: &str, port: u16, sim_port: u16) -> Reaped {
    start_with(db, port, sim_port, "serve", &[])
}

fn start_with(db: &str, port: u16, sim_port: u16, cmd: &str, env: &[(&str, &str)]) -> Reaped {
    let mut c = Command::new(env!("CARGO_BIN_EXE_paycore"));
    c.args([
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        cmd,
    ])
    .env("PAYCORE_SERVER__PORT", port.to_string())
    .env("PAYCORE_SIMULATOR__PORT", sim_port.to_string())
    .env("PAYCORE_SIMULATOR__BILLER_PORT", "0")
    .env("PAYCORE_STORAGE__SQLITE__PATH", db)
    .env("RUST_LOG", log_filter());
    child_output(&mut c, cmd, port);
    on_backend(&mut c, db);
    for (k, v) in env {
        c.env(k, v);
    }
    if std::env::var(CQL_ENV).is_ok() {
        // As an operator would: the keyspace is migrated before serve (the DDL takes a while).
        let mut m = Command::new(env!("CARGO_BIN_EXE_paycore"));
        m.args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
            "migrate",
        ])
        .env("RUST_LOG", "warn");
        on_backend(&mut m, db);
        let out = m.output().expect("paycore migrate runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Reaped(c.spawn().expect("start paycore"))
}

/// Runs `paycore ledger verify` on the database of a stopped paycore: it must pass (orders the
/// ledger had not booked at the kill are counted as not yet booked, never as failures).
fn ledger_verifies(db: &str) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_paycore"));
    c.args([
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        "ledger",
        "verify",
    ])
    .env("PAYCORE_STORAGE__SQLITE__PATH", db)
    .env("RUST_LOG", "warn");
    on_backend(&mut c, db);
    let out = c.output().expect("paycore ledger verify runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "ledger verify failed:\n{stdout}"
    );
    assert!(stdout.contains("PASSED"), "{stdout}");
    eprintln!("{stdout}");
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    // On the CQL backend a restart after a kill first waits for the killed one's owner lease.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("paycore did not become ready at {base}");
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    support::signed(http, base, SECRET, method, path, body)
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db").to_string_lossy().into_owned();
    let (port, sim_port) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut child = start(&db, port, sim_port);
    wait_healthy(&http, &base).await;

    // Acknowledged writes: order id -> the status its last 2xx answer implied.
    let acked: Arc<Mutex<Vec<(String, &'static str)>>> = Arc::default();
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (http, base, acked) = (http.clone(), base.clone(), acked.clone());
            tokio::spawn(async move {
                let mut i = 0;
                loop {
                    i += 1;
                    let Some((201, tok)) = call(&http, &base, "POST", "/v1/submit-tokens", None).await else { return };
                    let body = json!({"submit_token": tok["token"], "merchant_order_no": format!("K{w}-{i}"),
                                      "amount": 100, "business_type": "BillBuy", "channel": "sim"});
                    let Some((201, order)) = call(&http, &base, "POST", "/v1/orders", Some(body)).await else { return };
                    let id = order["order_id"].as_str().unwrap().to_string();
                    let pays = i % 4 == 0;
                    acked.lock().unwrap().push((id.clone(), "CREATED"));
                    if pays {
                        acked.lock().unwrap().push((id.clone(), "PAY_SENT"));
                        let path = format!("/v1/orders/{id}/pay");
                        let Some((202, _)) = call(&http, &base, "POST", &path, Some(json!({"pay_method": "native"}))).await else { return };
                        acked.lock().unwrap().push((id, "PAYING"));
                    }
                    if Instant::now() > stop_at + Duration::from_secs(10) {
                        return;
                    }
                }
            })
        })
        .collect();
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL"); // std's kill() sends SIGKILL on Unix
    child.wait().unwrap();
    for w in workers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "too little load before the kill: {}",
        acked.len()
    );

    let mut child = start(&db, port, sim_port);
    wait_healthy(&http, &base).await;
    let mut last: std::collections::HashMap<String, &str> = Default::default();
    for (id, status) in &acked {
        last.insert(id.clone(), status);
    }
    for (id, status) in &last {
        let (code, order) = call(&http, &base, "GET", &format!("/v1/orders/{id}"), None)
            .await
            .expect("read");
        assert_eq!(code, 200, "acknowledged order {id} lost after SIGKILL");
        let now = order["status"].as_str().unwrap();
        let ok = match *status {
            "CREATED" => now == "CREATED",
            // A pay in flight at the kill may or may not have landed.
            "PAY_SENT" => ["CREATED", "PAYING", "PAID"].contains(&now),
            "PAYING" => now == "PAYING" || now == "PAID",
            _ => unreachable!(),
        };
        assert!(ok, "order {id} acknowledged as {status} is now {now}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("checked {} acknowledged orders after SIGKILL", last.len());
    ledger_verifies(&db);
}

async fn wait_order(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let last = call(http, base, "GET", &format!("/v1/orders/{id}"), None)
            .await
            .map(|(_, b)| b)
            .unwrap_or(Value::Null);
        if done(&last) {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "order {id} never finished: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn audit(http: &reqwest::Client, sim: &str, id: &str) -> Value {
    http.get(format!("{sim}/sim/v1/payments?out_trade_no={id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The merchant's notification endpoint: fails the first attempt of every notification (500),
/// accepts the rest, and keeps per notification id (attempts, accepted).
#[derive(Clone, Default)]
struct Merchant(Arc<Mutex<std::collections::HashMap<String, (u32, u32)>>>);

impl Merchant {
    fn start(listener: std::net::TcpListener) -> (Self, actix_web::dev::ServerHandle) {
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        let seen = Merchant::default();
        let state = seen.clone();
        let server = HttpServer::new(move || {
            let state = state.clone();
            App::new().default_service(web::to(move |req: HttpRequest| {
                let state = state.clone();
                async move {
                    let id = req
                        .headers()
                        .get("X-Paycore-Notification-Id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let mut map = state.0.lock().unwrap();
                    let entry = map.entry(id).or_default();
                    entry.0 += 1;
                    if entry.0 == 1 {
                        return HttpResponse::InternalServerError().finish();
                    }
                    entry.1 += 1;
                    HttpResponse::Ok().finish()
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        (seen, handle)
    }

    fn of(&self, id: &str) -> (u32, u32) {
        self.0.lock().unwrap().get(id).copied().unwrap_or_default()
    }
}

async fn biller_audit(http: &reqwest::Client, biller: &str, id: &str) -> Value {
    http.get(format!("{biller}/biller/v1/write-offs?order_id={id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The simulators run in their own process (they play third parties that outlive our crash),
/// every callback is lost, the first two attempts of every refund fail and the first two
/// write-offs of every order fail. Paycore is killed with polls, refund retries, write-off
/// retries and expiry closes pending; after the restart every one completes: paying orders
/// reach PAID and are fulfilled, refunds SUCCEEDED (once each at the channel), write-offs are
/// credited once each, expired orders CLOSED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_pending_at_sigkill_all_complete_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("timers.db").to_string_lossy().into_owned();
    let (port, sim_port) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{port}");
    let sim = format!("http://127.0.0.1:{sim_port}");
    let biller_port = free_port().to_string();
    let biller_url = format!("http://127.0.0.1:{biller_port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let sim_env = [
        ("PAYCORE_SIMULATOR__BILLER_PORT", biller_port.as_str()),
        ("PAYCORE_SIMULATOR__BILLER__FAIL_FIRST", "2"),
        ("PAYCORE_SIMULATOR__BEHAVIOUR__LOST_CALLBACK_RATE", "1.0"),
        (
            "PAYCORE_SIMULATOR__BEHAVIOUR__REFUND_ERRORS_PER_REFUND",
            "2",
        ),
        ("PAYCORE_SIMULATOR__BEHAVIOUR__PAY_DELAY_MS_MIN", "10"),
        ("PAYCORE_SIMULATOR__BEHAVIOUR__PAY_DELAY_MS_MAX", "50"),
    ];
    let mut simulator = start_with(&db, free_port(), sim_port, "channel-sim", &sim_env);
    let sim_url = sim.clone();
    let core_env = [
        ("PAYCORE_SIMULATOR__IN_PROCESS", "false"),
        ("PAYCORE_CHANNELS__SIM__BASE_URL", sim_url.as_str()),
        ("PAYCORE_MERCHANTS__0__BILLER__URL", biller_url.as_str()),
        (
            "PAYCORE_ORDERS__POLL_SCHEDULE_MS",
            "[2500, 200, 200, 200, 200, 400]",
        ),
        (
            "PAYCORE_ORDERS__REFUND_RETRY_MS",
            "[2500, 200, 200, 200, 400, 800]",
        ),
        (
            "PAYCORE_ORDERS__FULFILLMENT_RETRY_MS",
            "[2500, 200, 200, 200, 400, 800]",
        ),
        ("PAYCORE_ORDERS__MIN_EXPIRE_SECONDS", "1"),
        ("PAYCORE_TIMERS__TICK_MS", "50"),
        // A timer or a delivery claimed just before the kill is taken again once its lease runs
        // out: leases shorter than the defaults (30 s, 60 s), so that happens within the waits
        // below. The delivery lease stays longer than its request timeout (5 s).
        ("PAYCORE_TIMERS__LEASE_MS", "5000"),
    ];
    let merchant_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = format!(
        "http://127.0.0.1:{}/hook",
        merchant_listener.local_addr().unwrap().port()
    );
    let (merchant, merchant_server) = Merchant::start(merchant_listener);
    let notify_env = [
        ("PAYCORE_MERCHANTS__0__NOTIFY_URL", hook.as_str()),
        (
            "PAYCORE_NOTIFICATIONS__RETRY_SCHEDULE_MS",
            "[2500, 200, 200, 200, 400, 800]",
        ),
        ("PAYCORE_NOTIFICATIONS__TICK_MS", "50"),
        ("PAYCORE_NOTIFICATIONS__LEASE_MS", "6000"),
    ];
    let core_env: Vec<(&str, &str)> = core_env.iter().chain(&notify_env).copied().collect();
    let mut child = start_with(&db, port, sim_port, "serve", &core_env);
    wait_healthy(&http, &base).await;
    let create = |no: String, expire: Option<i64>| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let (_, tok) = call(&http, &base, "POST", "/v1/submit-tokens", None)
                .await
                .unwrap();
            let mut body = json!({"submit_token": tok["token"], "merchant_order_no": no,
                                  "amount": 500, "business_type": "BillBuy", "channel": "sim"});
            if let Some(e) = expire {
                body["expire_seconds"] = json!(e);
            }
            let (code, order) = call(&http, &base, "POST", "/v1/orders", Some(body))
                .await
                .unwrap();
            assert_eq!(code, 201, "{order}");
            order["order_id"].as_str().unwrap().to_string()
        }
    };
    let pay = |id: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let path = format!("/v1/orders/{id}/pay");
            let (code, body) = call(
                &http,
                &base,
                "POST",
                &path,
                Some(json!({"pay_method": "native"})),
            )
            .await
            .unwrap();
            assert_eq!(code, 202, "{body}");
        }
    };

    // Five orders created and paid (the channel's callbacks are lost: polls settle them).
    let create_and_pay = |prefix: &'static str| {
        let (create, pay) = (&create, &pay);
        async move {
            let mut ids = Vec::new();
            for i in 0..5 {
                let id = create(format!("{prefix}-{i}"), None).await;
                pay(id.clone()).await;
                ids.push(id);
            }
            ids
        }
    };

    // Orders to refund: paid (by the first poll, callbacks being lost), then refunded; the first
    // refund attempt fails, so each refund is pending on its retry timer at the kill.
    let refunded = create_and_pay("R").await;
    for id in &refunded {
        // A fulfilled order's refund reverses the write-off first.
        wait_order(&http, &base, id, Duration::from_secs(20), |o| {
            o["fulfillment"]["status"] == "SUCCEEDED"
        })
        .await;
        let path = format!("/v1/orders/{id}/refunds");
        let (code, body) = call(
            &http,
            &base,
            "POST",
            &path,
            Some(json!({"refund_no": "RF", "amount": 500})),
        )
        .await
        .unwrap();
        assert_eq!(code, 202, "{body}");
    }
    // Paying orders whose first poll is due after the kill, and orders that expire meanwhile.
    let paying = create_and_pay("P").await;
    let mut expiring = Vec::new();
    for i in 0..5 {
        expiring.push(create(format!("E-{i}"), Some(1)).await);
    }
    // Paid orders whose first write-off failed: their retry is pending at the kill.
    let fulfilling = create_and_pay("F").await;
    for id in &fulfilling {
        wait_order(&http, &base, id, Duration::from_secs(20), |o| {
            o["fulfillment"]["status"] == "FAILED"
        })
        .await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let mut child = start_with(&db, port, sim_port, "serve", &core_env);
    wait_healthy(&http, &base).await;
    for id in &paying {
        wait_order(&http, &base, id, Duration::from_secs(30), |o| {
            o["status"] == "PAID"
        })
        .await;
        assert_eq!(
            audit(&http, &sim, id).await["charges"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
    for id in &refunded {
        let o = wait_order(&http, &base, id, Duration::from_secs(30), |o| {
            o["status"] == "REFUNDED"
        })
        .await;
        assert_eq!(o["refunded_amount"], 500);
        let a = audit(&http, &sim, id).await;
        assert_eq!(
            a["refunds"].as_array().unwrap().len(),
            1,
            "refunded once: {a}"
        );
    }
    for id in &expiring {
        wait_order(&http, &base, id, Duration::from_secs(30), |o| {
            o["status"] == "CLOSED"
        })
        .await;
    }
    for id in fulfilling.iter().chain(&paying) {
        wait_order(&http, &base, id, Duration::from_secs(30), |o| {
            o["fulfillment"]["status"] == "SUCCEEDED"
        })
        .await;
        let a = biller_audit(&http, &biller_url, id).await;
        assert_eq!(
            a["write_offs"].as_array().unwrap().len(),
            1,
            "credited once: {a}"
        );
    }
    for id in &refunded {
        let a = biller_audit(&http, &biller_url, id).await;
        assert_eq!(
            a["reversals"][0]["amount"], 500,
            "reversed before the refund: {a}"
        );
    }
    // Every notification is delivered, each accepted by the merchant once (its first attempt
    // failed, so each was waiting for its retry, many of them across the kill).
    let expected: [(&[String], &[&str]); 4] = [
        (
            &refunded,
            &["order.paid", "order.fulfilled", "refund.succeeded"],
        ),
        (&paying, &["order.paid", "order.fulfilled"]),
        (&fulfilling, &["order.paid", "order.fulfilled"]),
        (&expiring, &["order.closed"]),
    ];
    for (ids, types) in expected {
        for id in ids {
            // An order's notifications go out one after another, each first refused once and
            // retried, one of them perhaps after its lease ran out across the kill.
            let deadline = Instant::now() + Duration::from_secs(30);
            let list = loop {
                let path = format!("/v1/notifications?order_id={id}");
                let (code, list) = call(&http, &base, "GET", &path, None).await.unwrap();
                assert_eq!(code, 200, "{list}");
                let all = list.as_array().unwrap();
                let delivered = all.iter().all(|n| n["status"] == "DELIVERED");
                if delivered && all.len() == types.len() {
                    break list;
                }
                assert!(Instant::now() < deadline, "notifications of {id}: {list}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let got: Vec<&str> = list
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["type"].as_str().unwrap())
                .collect();
            assert_eq!(got, types.to_vec(), "{id}: in version order");
            for n in list.as_array().unwrap() {
                let (attempts, accepted) = merchant.of(n["notification_id"].as_str().unwrap());
                assert!(attempts >= 2, "{n}");
                assert_eq!(accepted, 1, "accepted once: {n}");
            }
        }
    }
    merchant_server.stop(false).await;
    child.kill().unwrap();
    child.wait().unwrap();
    simulator.kill().unwrap();
    simulator.wait().unwrap();
    ledger_verifies(&db);
}
