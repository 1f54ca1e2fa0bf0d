//! Settings reload against the real binary: a merchant's secret and rate limit change through
//! SIGHUP under load (requests signed with the new secret pass, the old one's are refused,
//! nothing in flight is lost), a broken file changes nothing, `POST /admin/reload` does the same
//! as SIGHUP behind its bearer token; and the two start-up traps: a settings file named on the
//! command line that does not exist, and the published demo secrets off loopback.

mod support;

use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Reaped, free_port, signed as call};

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
const OLD_SECRET: &str = "first-secret-of-merchant-demo";
const NEW_SECRET: &str = "second-secret-of-merchant-demo";
const ADMIN_TOKEN: &str = "an-admin-token-of-at-least-32-characters";

/// The shipped config.toml with the demo merchant's secret and rate limit replaced.
fn settings_text(secret: &str, rate: u32) -> String {
    let text = std::fs::read_to_string(CONFIG).unwrap();
    let text = text.replace(
        "secret = \"demo-secret-change-me\"",
        &format!("secret = \"{secret}\""),
    );
    let text = text.replace(
        "rate_limit_per_sec = 20000",
        &format!("rate_limit_per_sec = {rate}"),
    );
    text.replace(
        "rate_limit_burst = 5000",
        &format!("rate_limit_burst = {rate}"),
    )
}

/// The paycore binary with its ports and database set by environment, output discarded.
fn paycore(args: &[&str], db: &str, port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_paycore"));
    c.args(args)
        .env("PAYCORE_SERVER__PORT", port.to_string())
        .env("PAYCORE_SIMULATOR__PORT", "0")
        .env("PAYCORE_SIMULATOR__BILLER_PORT", "0")
        .env("PAYCORE_STORAGE__SQLITE__PATH", db)
        .env("PAYCORE_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .env_remove("PAYCORE_TEST_CQL")
        .env_remove("PAYCORE_TEST_LOG_DIR")
        .env_remove("PAYCORE_TEST_RUST_LOG");
    c
}

/// Runs a command that must exit (not serve) within a bound; answers its status and stderr
/// and stdout.
fn exits(mut c: Command) -> (Option<i32>, String) {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
            return (out.status.code(), text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("paycore kept running");
}

#[test]
fn a_settings_file_named_on_the_command_line_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db").to_string_lossy().into_owned();
    let missing = dir
        .path()
        .join("nowhere.toml")
        .to_string_lossy()
        .into_owned();
    let (code, text) = exits(paycore(&["--config", &missing, "serve"], &db, free_port()));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("cannot read") && text.contains("nowhere.toml"),
        "{text}"
    );
    assert!(!std::path::Path::new(&db).exists(), "nothing was opened");
}

#[test]
fn published_secrets_are_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db").to_string_lossy().into_owned();
    let mut c = paycore(&["--config", CONFIG, "serve"], &db, free_port());
    c.env("PAYCORE_SERVER__BIND", "0.0.0.0");
    let (code, text) = exits(c);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("channels.sim.secret") && text.contains("published"),
        "{text}"
    );
    // Own secrets everywhere, and it starts (then is stopped).
    let file = dir.path().join("own.toml");
    let own = settings_text("own-merchant-secret-0001", 20_000)
        .replace("sim-secret-change-me", "own-channel-secret-0001")
        .replace("biller-secret-change-me", "own-biller-secret-0001");
    std::fs::write(&file, own).unwrap();
    let port = free_port();
    let mut child = paycore(&["--config", file.to_str().unwrap(), "serve"], &db, port)
        .env("PAYCORE_SERVER__BIND", "0.0.0.0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Reaped)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut up = false;
    while Instant::now() < deadline && !up {
        up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "paycore with its own secrets did not start on 0.0.0.0");
}

/// A token and a create signed with `secret`: the create's answer (or the token's, refused).
async fn create(
    http: &reqwest::Client,
    base: &str,
    secret: &str,
    no: &str,
) -> Result<(u16, Value), String> {
    let (status, tok) = call(http, base, secret, "POST", "/v1/submit-tokens", None).await?;
    if status != 201 {
        return Ok((status, tok));
    }
    let body = json!({"submit_token": tok["token"], "merchant_order_no": no, "amount": 100,
                      "business_type": "BillBuy", "channel": "sim"});
    call(http, base, secret, "POST", "/v1/orders", Some(body)).await
}

/// The value of one series in `/metrics` (0 when absent).
async fn metric(http: &reqwest::Client, base: &str, series: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn wait_metric(http: &reqwest::Client, base: &str, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(http, base, series).await < want {
        assert!(Instant::now() < deadline, "{series} never reached {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The secret a request was signed with and its answer (or the transport's error).
type Answer = (String, Result<(u16, Value), String>);

fn hangup(child: &Child) {
    let ok = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_a_secret_and_a_rate_under_load_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db").to_string_lossy().into_owned();
    let file = dir.path().join("paycore.toml");
    std::fs::write(&file, settings_text(OLD_SECRET, 20_000)).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = paycore(&["--config", file.to_str().unwrap(), "serve"], &db, port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Reaped)
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200) {
        assert!(Instant::now() < deadline, "paycore did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Load with the old secret; each worker turns to the new one once the old is refused.
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (http, base, answers, stop) =
                (http.clone(), base.clone(), answers.clone(), stop.clone());
            tokio::spawn(async move {
                let mut secret = OLD_SECRET;
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let answer = create(&http, &base, secret, &format!("R{w}-{i}")).await;
                    let refused = matches!(answer, Ok((401, _)));
                    answers.lock().unwrap().push((secret.to_string(), answer));
                    if refused {
                        secret = NEW_SECRET;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    std::fs::write(&file, settings_text(NEW_SECRET, 50)).unwrap();
    hangup(&child);
    wait_metric(
        &http,
        &base,
        "paycore_config_reloads_total{result=\"applied\"}",
        1.0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    let mut created = Vec::new();
    for (secret, answer) in &answers {
        // Nothing in flight is lost: every request got an answer, and the only refusals are
        // the old secret's (401) and the new, lower rate (429).
        let (status, body) = answer.as_ref().expect("every request is answered");
        match (*status, secret.as_str()) {
            (201, _) => created.push((
                secret.clone(),
                body["order_id"].as_str().unwrap().to_string(),
            )),
            (401, OLD_SECRET) | (429, NEW_SECRET) => {}
            other => panic!("unexpected answer {other:?}: {body}"),
        }
    }
    let old_ok = created.iter().filter(|(s, _)| s == OLD_SECRET).count();
    let new_ok = created.iter().filter(|(s, _)| s == NEW_SECRET).count();
    assert!(old_ok > 20, "too little load before the reload: {old_ok}");
    assert!(new_ok > 0, "no create with the new secret succeeded");
    assert!(
        answers
            .iter()
            .any(|(s, a)| s == NEW_SECRET && matches!(a, Ok((429, _)))),
        "the new rate limit of 50/s was never reached"
    );
    // Every acknowledged create is there, read with the new secret.
    tokio::time::sleep(Duration::from_secs(2)).await; // the 50/s bucket refills
    for (_, id) in created.iter().step_by((created.len() / 40).max(1)) {
        let path = format!("/v1/orders/{id}");
        let (status, body) = call(&http, &base, NEW_SECRET, "GET", &path, None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, _) = create(&http, &base, OLD_SECRET, "after-old").await.unwrap();
    assert_eq!(status, 401);

    // A broken file changes nothing: the new secret still works, the old one still does not.
    std::fs::write(
        &file,
        settings_text(NEW_SECRET, 50).replace("rate_limit_per_sec = 50", "rate_limit_per_sec = 0"),
    )
    .unwrap();
    hangup(&child);
    wait_metric(
        &http,
        &base,
        "paycore_config_reloads_total{result=\"refused\"}",
        1.0,
    )
    .await;
    assert_eq!(
        metric(&http, &base, "paycore_config_last_reload_success").await,
        0.0
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = create(&http, &base, NEW_SECRET, "after-broken")
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, _) = create(&http, &base, OLD_SECRET, "after-broken-old")
        .await
        .unwrap();
    assert_eq!(status, 401);
    std::fs::write(&file, "[server\nport = ").unwrap();
    hangup(&child);
    wait_metric(
        &http,
        &base,
        "paycore_config_reloads_total{result=\"refused\"}",
        2.0,
    )
    .await;
    let (status, body) = create(&http, &base, NEW_SECRET, "after-unparsable")
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");

    // The admin endpoint: its token, then the same reload as SIGHUP, with what it applied and
    // what needs a restart.
    let text = settings_text(OLD_SECRET, 20_000)
        .replace("body_limit_bytes = 65536", "body_limit_bytes = 1024");
    std::fs::write(&file, text).unwrap();
    let admin = |token: Option<&str>| {
        let mut r = http.post(format!("{base}/admin/reload"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(admin(None).await.unwrap().status(), 401);
    assert_eq!(
        admin(Some("not-the-admin-token-not-the-admin"))
            .await
            .unwrap()
            .status(),
        401
    );
    let (status, _) = create(&http, &base, OLD_SECRET, "before-admin")
        .await
        .unwrap();
    assert_eq!(status, 401, "a refused admin call changed nothing");
    let r = admin(Some(ADMIN_TOKEN)).await.unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    let applied: Vec<&str> = report["applied"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        applied,
        [
            "merchants.0.rate_limit_burst",
            "merchants.0.rate_limit_per_sec",
            "merchants.0.secret"
        ],
        "{report}"
    );
    assert_eq!(
        report["restart_required"],
        json!(["server.body_limit_bytes"]),
        "{report}"
    );
    let (status, body) = create(&http, &base, OLD_SECRET, "after-admin")
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
