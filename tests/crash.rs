//! Durability under kill -9: a create load runs against the real binary, the process is killed
//! with SIGKILL mid-load, and after a restart every order that got a 201 (and every pay that got
//! a 202) is there with its acknowledged status.

use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "demo-secret-change-me";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(db: &str, port: u16, sim_port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_paycore"))
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
            "serve",
        ])
        .env("PAYCORE_SERVER__PORT", port.to_string())
        .env("PAYCORE_SIMULATOR__PORT", sim_port.to_string())
        .env("PAYCORE_STORAGE__SQLITE__PATH", db)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start paycore")
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
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
    let bytes = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    let ts = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    let nonce = format!("{:032x}", rand::random::<u128>());
    let sig = paycore::http::auth::sign(
        SECRET.as_bytes(),
        &paycore::http::auth::canonical(method, path, &ts, &nonce, &bytes),
    );
    let r = http
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .header("X-Paycore-Merchant", "demo")
        .header("X-Paycore-Timestamp", ts)
        .header("X-Paycore-Nonce", nonce)
        .header("X-Paycore-Signature", sig)
        .body(bytes)
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    Some((status, body))
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
}
