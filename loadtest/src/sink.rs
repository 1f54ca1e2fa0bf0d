//! A merchant's notification endpoint for load tests: answers every POST with 200, checks the
//! signature paycore puts on it (the merchant's four headers), and measures how far each
//! `order.paid` notification lags behind the event (`occurred_at`, the commit of PAID). It
//! stops after `--duration` seconds or once `--expect` distinct notifications arrived, and
//! writes its counts and lag percentiles as JSON. Memory is bounded by `--max-ids`.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

/// What the sink saw.
#[derive(Default)]
struct Seen {
    received: u64,
    distinct: HashSet<String>,
    duplicates: u64,
    bad_signatures: u64,
    unreadable: u64,
    by_type: BTreeMap<String, u64>,
    lag_us: Option<Histogram<u64>>,
    over_capacity: u64,
}

/// The JSON report.
#[derive(Serialize)]
pub struct SinkReport {
    /// POSTs received.
    pub received: u64,
    /// Distinct notification ids.
    pub distinct: u64,
    /// Repeats of an id already received.
    pub duplicates: u64,
    /// Requests whose signature did not verify.
    pub bad_signatures: u64,
    /// Bodies that were not an event.
    pub unreadable: u64,
    /// Distinct notifications by event type.
    pub by_type: BTreeMap<String, u64>,
    /// `order.paid` delivery lag behind the event, milliseconds: p50, p90, p99, max.
    pub paid_lag_ms: BTreeMap<String, f64>,
    /// Ids not remembered because `--max-ids` were held (their duplicates are not counted).
    pub over_capacity: u64,
}

/// Sink settings.
pub struct SinkConfig {
    /// Listen address.
    pub bind: String,
    /// Port.
    pub port: u16,
    /// The merchant's secret, to verify signatures.
    pub secret: String,
    /// Longest run.
    pub duration: Duration,
    /// Stop once this many distinct notifications arrived (0: run for the duration).
    pub expect: u64,
    /// Most ids remembered.
    pub max_ids: usize,
    /// Where the JSON goes.
    pub out: PathBuf,
}

fn verified(req: &HttpRequest, body: &[u8], secret: &str) -> bool {
    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    let (Some(ts), Some(nonce), Some(sig)) = (
        h("X-Paycore-Timestamp"),
        h("X-Paycore-Nonce"),
        h("X-Paycore-Signature"),
    ) else {
        return false;
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let message = paycore::http::auth::canonical("POST", path, ts, nonce, body);
    paycore::http::auth::sign(secret.as_bytes(), &message) == sig
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    seen: web::Data<Arc<Mutex<Seen>>>,
    cfg: web::Data<(String, usize)>,
) -> HttpResponse {
    let now = OffsetDateTime::now_utc();
    let ok = verified(&req, &body, &cfg.0);
    let event: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let id = req
        .headers()
        .get("X-Paycore-Notification-Id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            event
                .as_ref()
                .and_then(|e| e["event_id"].as_str().map(str::to_string))
        });
    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
    s.received += 1;
    if !ok {
        s.bad_signatures += 1;
    }
    let (Some(event), Some(id)) = (event, id) else {
        s.unreadable += 1;
        return HttpResponse::Ok().finish();
    };
    if s.distinct.contains(&id) {
        s.duplicates += 1;
        return HttpResponse::Ok().finish();
    }
    if s.distinct.len() >= cfg.1 {
        s.over_capacity += 1;
    } else {
        s.distinct.insert(id);
    }
    let kind = event["type"].as_str().unwrap_or("?").to_string();
    *s.by_type.entry(kind.clone()).or_default() += 1;
    if kind == "order.paid"
        && let Some(at) = event["occurred_at"].as_str().and_then(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
    {
        let lag = (now - at).whole_microseconds().max(0) as u64;
        if let Some(h) = s.lag_us.as_mut() {
            let _ = h.record(lag.max(1));
        }
    }
    HttpResponse::Ok().finish()
}

/// Runs the sink until its duration passes or the expected count arrived; writes the report.
pub async fn run(cfg: SinkConfig) -> anyhow::Result<SinkReport> {
    let seen = Arc::new(Mutex::new(Seen {
        lag_us: Some(Histogram::new_with_bounds(1, 3_600_000_000, 3)?),
        ..Seen::default()
    }));
    let data = web::Data::new(seen.clone());
    let conf = web::Data::new((cfg.secret.clone(), cfg.max_ids));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(conf.clone())
            .app_data(web::PayloadConfig::new(64 * 1024))
            .default_service(web::post().to(receive))
    })
    .workers(1)
    .disable_signals()
    .bind((cfg.bind.as_str(), cfg.port))
    .with_context(|| format!("binding the sink on {}:{}", cfg.bind, cfg.port))?
    .run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    let deadline = tokio::time::Instant::now() + cfg.duration;
    loop {
        let done = {
            let s = seen.lock().unwrap_or_else(|p| p.into_inner());
            cfg.expect > 0 && s.distinct.len() as u64 + s.over_capacity >= cfg.expect
        };
        if done || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    handle.stop(true).await;
    let _ = task.await;
    let s = seen.lock().unwrap_or_else(|p| p.into_inner());
    let mut paid_lag_ms = BTreeMap::new();
    if let Some(h) = s.lag_us.as_ref().filter(|h| !h.is_empty()) {
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            paid_lag_ms.insert(name.to_string(), h.value_at_quantile(q) as f64 / 1000.0);
        }
        paid_lag_ms.insert("max".to_string(), h.max() as f64 / 1000.0);
        paid_lag_ms.insert("count".to_string(), h.len() as f64);
    }
    let report = SinkReport {
        received: s.received,
        distinct: s.distinct.len() as u64 + s.over_capacity,
        duplicates: s.duplicates,
        bad_signatures: s.bad_signatures,
        unreadable: s.unreadable,
        by_type: s.by_type.clone(),
        paid_lag_ms,
        over_capacity: s.over_capacity,
    };
    if let Some(dir) = cfg.out.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&cfg.out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", cfg.out.display()))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signed notification is counted once, its repeat as a duplicate, a forged one as a bad
    /// signature; the paid lag is measured from the event's own time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_verifies_and_measures_lag() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile_dir();
        let out = dir.join("sink.json");
        let sink = tokio::spawn(run(SinkConfig {
            bind: "127.0.0.1".into(),
            port,
            secret: "s3cret-for-the-sink-test".into(),
            duration: Duration::from_secs(20),
            expect: 2,
            max_ids: 100,
            out: out.clone(),
        }));
        let pool = crate::h1::Pool::new(
            &format!("http://127.0.0.1:{port}"),
            4,
            Duration::from_secs(2),
        )
        .unwrap();
        let occurred = OffsetDateTime::now_utc() - time::Duration::milliseconds(250);
        let body = |id: &str, kind: &str| {
            serde_json::to_vec(&serde_json::json!({
                "event_id": id, "type": kind, "order_id": "o", "merchant_id": "demo", "version": 4,
                "occurred_at": occurred.format(&time::format_description::well_known::Rfc3339).unwrap(),
                "data": {}
            }))
            .unwrap()
        };
        let send = |bytes: Vec<u8>, id: &'static str, secret: &'static str| {
            let pool = &pool;
            async move {
                let ts = OffsetDateTime::now_utc().unix_timestamp().to_string();
                let nonce = "0123456789abcdef";
                let sig = paycore::http::auth::sign(
                    secret.as_bytes(),
                    &paycore::http::auth::canonical("POST", "/hook", &ts, nonce, &bytes),
                );
                let headers = [
                    ("X-Paycore-Timestamp", ts.as_str()),
                    ("X-Paycore-Nonce", nonce),
                    ("X-Paycore-Signature", sig.as_str()),
                    ("X-Paycore-Notification-Id", id),
                ];
                matches!(
                    pool.send(hyper::Method::POST, "/hook", &headers, bytes).await,
                    Ok((status, _)) if status == 200
                )
            }
        };
        // The sink may need a moment to listen: retry the first send.
        let mut first = false;
        for _ in 0..100 {
            if send(body("e1", "order.paid"), "n1", "s3cret-for-the-sink-test").await {
                first = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(first, "the sink never answered");
        assert!(send(body("e1", "order.paid"), "n1", "s3cret-for-the-sink-test").await);
        assert!(send(body("e2", "order.closed"), "n2", "wrong-secret").await);
        let report = sink.await.unwrap().unwrap();
        assert_eq!(
            (report.received, report.distinct, report.duplicates),
            (3, 2, 1)
        );
        assert_eq!(report.bad_signatures, 1);
        assert_eq!(report.by_type.get("order.paid"), Some(&1));
        assert!(
            report.paid_lag_ms["p50"] >= 250.0,
            "{:?}",
            report.paid_lag_ms
        );
        assert!(out.exists());
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("paycore-sink-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
