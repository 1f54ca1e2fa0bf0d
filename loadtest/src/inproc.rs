//! The core without HTTP: paycore's order actors and its embedded store (SQLite with group
//! commit, `synchronous` as configured), built in this process as `paycore serve` builds them
//! (`paycore::app::Application`, with the outbox relay, the ledger and the notifier running),
//! and driven by `concurrency` tasks for `duration`. Each unit is an order's short life through
//! the actors: issue a token, create, `reads` reads, close — every one an operation of the
//! contract, none over HTTP. Reports operations per second, each operation's latency, and this
//! process's CPU per operation (driver included: it does little besides awaiting).

use anyhow::Context;
use hdrhistogram::Histogram;
use paycore::app::Application;
use paycore::config::Settings;
use paycore::domain::{Amount, BusinessType, Currency, MerchantId, MerchantOrderNo, NewOrder};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The operations of a unit, in order.
const OPS: [&str; 4] = ["token", "create", "read", "close"];

/// What to run.
pub struct Plan {
    /// paycore's configuration file (its merchants, channels and store settings).
    pub config: PathBuf,
    /// Directory for the store (a fresh one is made inside).
    pub data_dir: PathBuf,
    /// Units in flight.
    pub concurrency: usize,
    /// How long to start new units.
    pub duration: Duration,
    /// Reads per unit, between create and close.
    pub reads: u32,
    /// Run id (order numbers).
    pub run_id: String,
}

struct Tally {
    latency: Vec<Histogram<u64>>,
    errors: Vec<u64>,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        let mut latency = Vec::new();
        for _ in OPS {
            latency.push(Histogram::new_with_bounds(1, 60_000_000, 3)?);
        }
        Ok(Self {
            latency,
            errors: vec![0; OPS.len()],
            first_error: None,
        })
    }

    fn record(&mut self, op: usize, started: Instant, r: Result<(), String>) {
        match r {
            Ok(()) => {
                let us = started.elapsed().as_micros().clamp(1, 60_000_000) as u64;
                let _ = self.latency[op].record(us);
            }
            Err(e) => {
                self.errors[op] += 1;
                self.first_error.get_or_insert(format!("{}: {e}", OPS[op]));
            }
        }
    }

    fn merge(&mut self, other: &Tally) {
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            let _ = mine.add(theirs);
        }
        for (mine, theirs) in self.errors.iter_mut().zip(&other.errors) {
            *mine += theirs;
        }
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

/// The settings `paycore serve` would use, with the store in `dir`, both HTTP servers on free
/// ports, and no limits of the front door in the way (there is none).
fn settings(config: &Path, dir: &Path) -> anyhow::Result<Settings> {
    let db = dir.join("paycore.db");
    let env = [
        ("PAYCORE_SERVER__PORT", "0".to_string()),
        ("PAYCORE_SIMULATOR__PORT", "0".to_string()),
        ("PAYCORE_SIMULATOR__BILLER_PORT", "0".to_string()),
        (
            "PAYCORE_STORAGE__SQLITE__PATH",
            db.to_string_lossy().into_owned(),
        ),
    ]
    .map(|(k, v)| (k.to_string(), v));
    Settings::load(Some(&config.to_string_lossy()), env).map_err(|e| anyhow::anyhow!("{e}"))
}

fn new_order(merchant: &MerchantId, no: &str) -> anyhow::Result<NewOrder> {
    Ok(NewOrder {
        merchant_id: merchant.clone(),
        merchant_order_no: MerchantOrderNo::parse(no).map_err(|e| anyhow::anyhow!("{e}"))?,
        amount: Amount::new(100).map_err(|e| anyhow::anyhow!("{e}"))?,
        currency: Currency::Cny,
        business_type: BusinessType::IotBuy,
        channel: "sim".into(),
        subject: None,
        notify_url: None,
        expire_seconds: 900,
        fulfillment_required: false,
    })
}

/// One unit: token, create, reads, close. Stops at the first failed operation.
async fn unit(app: &Application, merchant: &MerchantId, no: &str, reads: u32, t: &mut Tally) {
    let orders = app.orders();
    let started = Instant::now();
    let token = orders.issue_token(merchant.clone()).await;
    let token = match token {
        Ok(r) => {
            t.record(0, started, Ok(()));
            r.token
        }
        Err(e) => return t.record(0, started, Err(e.to_string())),
    };
    let new = match new_order(merchant, no) {
        Ok(n) => n,
        Err(e) => return t.record(1, started, Err(e.to_string())),
    };
    let started = Instant::now();
    let order = match orders.create(token, new).await {
        Ok(o) => {
            t.record(1, started, Ok(()));
            o
        }
        Err(e) => return t.record(1, started, Err(e.to_string())),
    };
    for _ in 0..reads {
        let started = Instant::now();
        let r = orders.get(merchant, &order.order_id).await;
        t.record(2, started, r.map(|_| ()).map_err(|e| e.to_string()));
    }
    let started = Instant::now();
    let r = orders.close(merchant.clone(), order.order_id.clone()).await;
    let r = match r {
        Ok(o) if o.status.as_str() == "CLOSED" => Ok(()),
        Ok(o) => Err(format!("closed order is {}", o.status.as_str())),
        Err(e) => Err(e.to_string()),
    };
    t.record(3, started, r);
}

fn own_cpu_seconds() -> Option<f64> {
    crate::cpu::cpu_seconds(std::process::id())
}

/// Runs the plan and answers the report.
pub async fn run(plan: Plan) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(plan.concurrency > 0, "--concurrency must be at least 1");
    let dir = plan
        .data_dir
        .join(format!("paycore-in-process-{}", plan.run_id));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let app = Application::build(settings(&plan.config, &dir)?)
        .await
        .map_err(|e| anyhow::anyhow!("paycore did not start: {}", e.0))?;
    let app = Arc::new(app);
    let merchant = MerchantId::parse("demo").map_err(|e| anyhow::anyhow!("{e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(Mutex::new(Tally::new()?));
    let cpu0 = own_cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(plan.concurrency);
    for worker in 0..plan.concurrency {
        let (app, merchant, stop, total) =
            (app.clone(), merchant.clone(), stop.clone(), total.clone());
        let (run_id, reads) = (plan.run_id.clone(), plan.reads);
        tasks.push(tokio::spawn(async move {
            let mut mine = Tally::new().expect("valid histogram bounds");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let no = format!("IP{run_id}-{worker}-{n}");
                unit(&app, &merchant, &no, reads, &mut mine).await;
                n += 1;
            }
            if let Ok(mut t) = total.lock() {
                t.merge(&mine);
            }
        }));
    }
    tokio::time::sleep(plan.duration).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.context("a driver task panicked")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = own_cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    let report = {
        let t = total
            .lock()
            .map_err(|_| anyhow::anyhow!("tally poisoned"))?;
        let ok: u64 = t.latency.iter().map(|h| h.len()).sum();
        let failed: u64 = t.errors.iter().sum();
        let mut by_op = serde_json::Map::new();
        for (i, name) in OPS.iter().enumerate() {
            let h = &t.latency[i];
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            by_op.insert(
                name.to_string(),
                json!({
                    "ok": h.len(),
                    "errors": t.errors[i],
                    "per_s": h.len() as f64 / elapsed,
                    "p50_ms": ms(0.5),
                    "p99_ms": ms(0.99),
                    "max_ms": h.max() as f64 / 1000.0,
                }),
            );
        }
        json!({
            "concurrency": plan.concurrency,
            "reads_per_unit": plan.reads,
            "elapsed_s": elapsed,
            "ops_ok": ok,
            "ops_failed": failed,
            "ops_per_s": ok as f64 / elapsed,
            "units_per_s": t.latency[3].len() as f64 / elapsed,
            "cpu_s": cpu,
            "cpu_us_per_op": cpu.map(|c| c * 1e6 / ok.max(1) as f64),
            "first_error": t.first_error,
            "by_op": by_op,
        })
    };
    match Arc::try_unwrap(app) {
        Ok(app) => app.shutdown().await,
        Err(_) => eprintln!("in-process: paycore still shared at the end; not shut down"),
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mode drives the real core: every unit's operations succeed, and each unit does a
    /// token, a create, its reads and a close, in that proportion.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn units_run_through_the_real_core_without_failures() {
        let dir = tempfile::tempdir().unwrap();
        let report = run(Plan {
            config: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml")),
            data_dir: dir.path().to_path_buf(),
            concurrency: 4,
            duration: Duration::from_millis(500),
            reads: 3,
            run_id: "t1".into(),
        })
        .await
        .unwrap();
        assert_eq!(report["ops_failed"], 0, "{report}");
        let ok = |op: &str| report["by_op"][op]["ok"].as_u64().unwrap();
        assert!(ok("create") > 0, "{report}");
        assert_eq!(ok("token"), ok("create"));
        assert_eq!(ok("close"), ok("create"));
        assert_eq!(ok("read"), 3 * ok("create"));
        assert_eq!(
            report["ops_ok"].as_u64().unwrap(),
            ok("token") + ok("create") + ok("read") + ok("close")
        );
    }
}
