//! One million pending timers: memory stays bounded and due timers fire on time.
//!
//! The real application (port 0, temp directory, in-process simulator) is seeded with
//! `PENDING` timers due in a day (for orders that do not exist: storage is all they cost), then
//! `DUE` real orders are created with expiry 1..=10 s, each with its expiry timer. The run
//! reports RSS before and after seeding and while the due timers fire, and how late each order
//! was closed after its `expires_at` (the scheduler ticks every `timers.tick_ms`).
//!
//! `cargo bench --bench timers` (PENDING and DUE can be set in the environment).

use paycore::app::Application;
use paycore::config::Settings;
use paycore::domain::{
    Amount, BusinessType, Currency, MerchantId, MerchantOrderNo, NewOrder, OrderId, OrderStatus,
    TimerKind, TimerOp,
};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; nothing else is taken from the command line.
    let pending = env_or("PENDING", 1_000_000);
    let due = env_or("DUE", 2_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = Settings::default();
    s.server.port = 0;
    s.simulator.port = 0;
    s.simulator.biller_port = 0;
    s.orders.min_expire_seconds = 1;
    s.storage.sqlite.path = dir.path().join("t.db").to_string_lossy().into_owned();
    let app = Application::build(s.clone()).await.expect("app starts");
    let store = app.store();
    println!(
        "timers bench: {pending} pending timers, {due} due orders, tick {} ms, page {}",
        s.timers.tick_ms, s.timers.page_size
    );
    println!("rss at start: {:.1} MiB", rss_mib());

    let started = Instant::now();
    let far = OffsetDateTime::now_utc() + time::Duration::days(1);
    let mut seeded = 0;
    while seeded < pending {
        let n = (pending - seeded).min(2_000);
        let writes = (0..n).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let op = TimerOp::Set {
                    kind: TimerKind::Poll,
                    due_at: far,
                    attempt: 0,
                };
                store.write_timers(&OrderId::generate(), vec![op]).await
            })
        });
        for w in futures::future::join_all(writes).await {
            w.expect("task").expect("timer stored");
        }
        seeded += n;
    }
    println!(
        "seeded {seeded} timers in {:.1} s; rss {:.1} MiB",
        started.elapsed().as_secs_f64(),
        rss_mib()
    );
    let (count, _) = store
        .timer_counts(
            OffsetDateTime::now_utc(),
            OffsetDateTime::now_utc() + time::Duration::days(3650),
        )
        .await
        .expect("count");
    println!("timers in storage: {count}");

    let orders = app.orders().clone();
    let merchant = MerchantId::parse("demo").expect("merchant");
    let mut ids = Vec::with_capacity(due);
    for i in 0..due {
        let token = orders
            .issue_token(merchant.clone())
            .await
            .expect("token")
            .token;
        let new = NewOrder {
            merchant_id: merchant.clone(),
            merchant_order_no: MerchantOrderNo::parse(&format!("T-{i}")).expect("number"),
            amount: Amount::new(100).expect("amount"),
            currency: Currency::Cny,
            business_type: BusinessType::BillBuy,
            channel: "sim".into(),
            subject: None,
            notify_url: None,
            expire_seconds: 1 + (i % 10) as i64,
            fulfillment_required: false,
        };
        ids.push(orders.create(token, new).await.expect("created").order_id);
    }
    let mut peak = rss_mib();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut late_ms = Vec::with_capacity(due);
    let mut open: Vec<OrderId> = ids;
    while !open.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(rss_mib());
        let mut still = Vec::new();
        for id in open {
            let o = orders.get(&merchant, &id).await.expect("order");
            if o.status == OrderStatus::Closed {
                late_ms.push((o.updated_at - o.expires_at).as_seconds_f64() * 1_000.0);
            } else {
                still.push(id);
            }
        }
        open = still;
    }
    late_ms.sort_by(f64::total_cmp);
    println!(
        "closed {} of {due} on expiry; lateness ms p50 {:.0} p99 {:.0} max {:.0}; never closed {}",
        late_ms.len(),
        percentile(&late_ms, 0.5),
        percentile(&late_ms, 0.99),
        late_ms.last().copied().unwrap_or(0.0),
        open.len()
    );
    println!(
        "rss peak while firing: {peak:.1} MiB; at end {:.1} MiB",
        rss_mib()
    );
    app.shutdown().await;
}
