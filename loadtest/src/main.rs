//! `paycore-loadtest`: an open-loop load generator for paycore, with a closed-loop mode beside
//! it, a `--find-max` ramp, and the classic Redis-lock design as a baseline target, so that the
//! same workload runs against both on one machine. Every run is bounded by a count and a
//! duration, targets loopback unless told otherwise, and refuses to start if the target is down.

mod baseline;
mod baseline_server;
mod cpu;
mod engine;
mod findmax;
mod h1;
mod inproc;
mod kafka;
mod paycore_http;
mod plot;
mod report;
mod rss;
mod scenario;
mod schedule;
mod sink;
mod stats;
mod target;

use anyhow::{Context, bail};
use baseline::{Backoff, RedisLock, RepeatWrite};
use clap::{Args, Parser, Subcommand, ValueEnum};
use engine::Bounds;
use findmax::{Search, Step};
use paycore_http::Paycore;
use report::{Report, RunInfo};
use scenario::{Kind, Mix, Polling, Workload};
use schedule::{Rate, Schedule};
use serde_json::json;
use stats::Stats;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::Target;

/// Longest a single run may last, whatever is asked.
const MAX_DURATION_SECS: u64 = 3600;
/// Pause before the first arrival, so the schedule does not start behind.
const LEAD: Duration = Duration::from_millis(50);

#[derive(Parser)]
#[command(
    name = "paycore-loadtest",
    version,
    about = "Load generator and benchmarks for paycore"
)]
struct Cli {
    /// Tokio worker threads of the load generator.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one scenario: open loop at --rate (or ramped), or closed loop with --clients.
    Run(RunArgs),
    /// Ramps the open-loop rate and reports the highest rate held with p99 under a bound.
    FindMax(FindMaxArgs),
    /// Runs one workload against paycore and then the Redis-lock baseline, and reports the ratio.
    Compare(CompareArgs),
    /// Checks the baseline's Redis logic (token, lock, release) against a real Redis server.
    BaselineCheck(BaselineArgs),
    /// Serves the Redis-lock baseline over HTTP with paycore's request signing, so it can be
    /// loaded exactly as paycore is (`run --url` / `compare --baseline-url`).
    BaselineServe(ServeArgs),
    /// A merchant's notification endpoint: answers 200, verifies signatures, and reports how far
    /// `order.paid` notifications lag behind PAID (p50/p99) as JSON.
    Sink(SinkArgs),
    /// Create commands through Kafka: produces them to paycore's command topic, reads the replies
    /// and the event topic, and reports durable orders with replies per second, reply latency,
    /// and how far `order.created` reached the event topic after its commit.
    KafkaIngest(KafkaIngestArgs),
    /// The core without HTTP: paycore's actors and embedded store built in this process, driven
    /// by concurrent units of token, create, reads and close; reports operations per second.
    InProcess(InProcessArgs),
}

#[derive(Args)]
struct InProcessArgs {
    /// paycore's configuration file.
    #[arg(long, default_value = "config.toml")]
    config: PathBuf,
    /// Where the fresh store goes (a directory inside it, removed after).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    data_dir: PathBuf,
    /// Units in flight (at most 65,536).
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Seconds to start new units for (at most 3600).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Reads of the order per unit, between its create and its close (at most 1,000).
    #[arg(long, default_value_t = 2)]
    reads: u32,
    /// The JSON report.
    #[arg(long, default_value = "loadtest/out/in-process.json")]
    out: PathBuf,
}

#[derive(Args)]
struct KafkaIngestArgs {
    /// Broker list.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// paycore's command topic.
    #[arg(long, default_value = "paycore.commands")]
    commands_topic: String,
    /// paycore's reply topic.
    #[arg(long, default_value = "paycore.replies")]
    replies_topic: String,
    /// paycore's event topic.
    #[arg(long, default_value = "paycore.order-events")]
    events_topic: String,
    /// The merchant the commands name.
    #[arg(long, default_value = "demo")]
    merchant: String,
    /// Create commands to send (at most 10,000,000).
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Commands per second; 0 sends as fast as the producer takes them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds to run at most.
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// Where the JSON report goes.
    #[arg(long, default_value = "loadtest/out/kafka-ingest.json")]
    out: PathBuf,
    /// Report this process's CPU per answered command, as NAME=PID (paycore, the broker);
    /// repeatable.
    #[arg(long = "cpu-pid", value_name = "NAME=PID")]
    cpu_pids: Vec<cpu::Watched>,
}

#[derive(Args)]
struct SinkArgs {
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// Port.
    #[arg(long, default_value_t = 8190)]
    port: u16,
    /// The merchant's secret (notifications are signed with it).
    #[arg(long, default_value = "demo-secret-change-me")]
    secret: String,
    /// Seconds to run at most.
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Stop once this many distinct notifications arrived (0: run for the duration).
    #[arg(long, default_value_t = 0)]
    expect: u64,
    /// Most notification ids remembered (for duplicates).
    #[arg(long, default_value_t = 10_000_000)]
    max_ids: usize,
    /// Where the JSON report goes.
    #[arg(long, default_value = "loadtest/out/sink.json")]
    out: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    baseline_args: BaselineArgs,
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// Port.
    #[arg(long, default_value_t = 8180)]
    port: u16,
    /// HTTP workers (paycore's default is one per core).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Merchant id accepted.
    #[arg(long, default_value = "demo")]
    merchant: String,
    /// The merchant's secret.
    #[arg(
        long,
        default_value = "demo-secret-change-me",
        env = "PAYCORE_LOADTEST_SECRET"
    )]
    secret: String,
    /// The simulator channel's callback secret, checked on result callbacks.
    #[arg(long, default_value = "sim-secret-change-me")]
    channel_secret: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BaselineKind {
    /// Redis token + per-order `SET NX PX` lock + SQLite read-modify-write, performed in the
    /// load generator's process (no HTTP, no signatures: favours the baseline).
    RedisLock,
    /// The same design served over HTTP by `baseline-serve` at --url, with paycore's signing.
    RedisLockHttp,
}

#[derive(Args, Clone)]
struct TargetArgs {
    /// paycore's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Merchant id to sign as.
    #[arg(long, default_value = "demo")]
    merchant: String,
    /// The merchant's secret.
    #[arg(
        long,
        default_value = "demo-secret-change-me",
        env = "PAYCORE_LOADTEST_SECRET"
    )]
    secret: String,
    /// The channel callbacks are delivered as (the contention scenario's paid results).
    #[arg(long, default_value = "sim")]
    channel: String,
    /// That channel's callback signing secret (config.toml's `[[channels]] secret`).
    #[arg(long, default_value = "sim-secret-change-me")]
    channel_secret: String,
    /// Allow targets off the loopback interface (off by default: load only your own machine).
    #[arg(long)]
    allow_remote: bool,
}

#[derive(Args, Clone)]
struct BaselineArgs {
    /// Redis for the baseline.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The baseline's SQLite file (default: a fresh file in the temp directory, removed after).
    #[arg(long)]
    baseline_db: Option<PathBuf>,
    /// Pooled SQLite connections of the baseline.
    #[arg(long, default_value_t = 8)]
    baseline_connections: usize,
    /// Whether a repeated pay writes the row (`always`: the read-modify-write of every request).
    #[arg(long, value_enum, default_value_t = RepeatWrite::Always)]
    repeat_write: RepeatWrite,
    /// First back-off pause on a held lock, ms (doubles up to --lock-backoff-cap-ms, jittered).
    #[arg(long, default_value_t = 2)]
    lock_backoff_ms: u64,
    /// Longest back-off pause, ms.
    #[arg(long, default_value_t = 50)]
    lock_backoff_cap_ms: u64,
    /// Give up on a held lock after this long, ms (answers lock_timeout).
    #[arg(long, default_value_t = 3000)]
    lock_wait_ms: u64,
}

#[derive(Args, Clone)]
struct WorkloadArgs {
    /// Scenario.
    #[arg(long, value_enum, default_value_t = Kind::Create)]
    scenario: Kind,
    /// Orders the hot scenario works on.
    #[arg(long, default_value_t = 100)]
    hot_orders: usize,
    /// Share of pays among hot units, percent (the rest are reads).
    #[arg(long, default_value_t = 50)]
    hot_pay_percent: u32,
    /// Mixed scenario weights.
    #[arg(long, default_value = "create=40,lifecycle=10,pay=25,read=25")]
    mix: String,
    /// Lifecycle: pause before the first read after pay, ms.
    #[arg(long, default_value_t = 30)]
    poll_first_ms: u64,
    /// Lifecycle: pause between reads, ms.
    #[arg(long, default_value_t = 20)]
    poll_every_ms: u64,
    /// Lifecycle: give up waiting for PAID after this long, ms.
    #[arg(long, default_value_t = 10_000)]
    paid_deadline_ms: u64,
}

#[derive(Args, Clone)]
struct OutputArgs {
    /// Directory for the JSON report and the PNG plot.
    #[arg(long, default_value = "loadtest/out")]
    out: PathBuf,
    /// File stem of the outputs (default: scenario and target).
    #[arg(long)]
    name: Option<String>,
    /// Sample this process's RSS every second into the report (e.g. paycore's pid).
    #[arg(long)]
    rss_pid: Option<u32>,
    /// Report this process's CPU per successful unit, as NAME=PID (e.g. `paycore=4242`);
    /// repeatable.
    #[arg(long = "cpu-pid", value_name = "NAME=PID")]
    cpu_pids: Vec<cpu::Watched>,
    /// No live progress.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Clone)]
struct LoadArgs {
    /// Open loop: units of work per second (the start of the ramp with --ramp-to).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Open loop: ramp linearly from --rate to this rate over the duration.
    #[arg(long)]
    ramp_to: Option<f64>,
    /// Closed loop instead: this many concurrent clients, each waiting for its answer.
    #[arg(long)]
    clients: Option<usize>,
    /// Seconds the run lasts at most.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Units of work at most.
    #[arg(long, default_value_t = 10_000_000)]
    count: u64,
    /// Open loop: most units in flight; the wait for a slot is charged to the units.
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// Seconds unfinished units may still complete after the schedule ends.
    #[arg(long, default_value_t = 10)]
    drain: u64,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Run against the classic design instead of paycore.
    #[arg(long, value_enum)]
    baseline: Option<BaselineKind>,
    #[command(flatten)]
    baseline_args: BaselineArgs,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
struct FindMaxArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Search against the classic design instead of paycore.
    #[arg(long, value_enum)]
    baseline: Option<BaselineKind>,
    #[command(flatten)]
    baseline_args: BaselineArgs,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// The p99 bound, milliseconds.
    #[arg(long, default_value_t = 5.0)]
    p99_ms: f64,
    /// First rate tried, units/s.
    #[arg(long, default_value_t = 500.0)]
    start_rate: f64,
    /// Growth factor while steps hold.
    #[arg(long, default_value_t = 1.5)]
    factor: f64,
    /// Highest rate tried.
    #[arg(long, default_value_t = 200_000.0)]
    ceiling: f64,
    /// Seconds per step.
    #[arg(long, default_value_t = 4)]
    step_secs: u64,
    /// Bisections after the first failed step.
    #[arg(long, default_value_t = 3)]
    refinements: u32,
    /// Most steps.
    #[arg(long, default_value_t = 12)]
    max_steps: usize,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
struct CompareArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    baseline_args: BaselineArgs,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Concurrent clients (closed loop) for the throughput comparison.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds per system.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Also run both open-loop at this rate, to compare latency at equal load.
    #[arg(long)]
    rate: Option<f64>,
    /// Also load the baseline served over HTTP (`baseline-serve`) at this URL: the
    /// like-for-like comparison, with the same HTTP and signatures as paycore.
    #[arg(long)]
    baseline_url: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

/// The allocator paycore's binary runs with (ARCHITECTURE.md, "Dependencies"): the
/// `in-process` mode builds paycore's actors and store in this process and must measure them
/// as they run in production; the generator and the in-process baseline get it too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Run(a) => run(a).await,
            Command::FindMax(a) => find_max(a).await,
            Command::Compare(a) => compare(a).await,
            Command::BaselineCheck(a) => baseline_check(a).await,
            Command::BaselineServe(a) => baseline_serve(a).await,
            Command::Sink(a) => {
                let report = sink::run(sink::SinkConfig {
                    bind: a.bind,
                    port: a.port,
                    secret: a.secret,
                    duration: Duration::from_secs(a.duration.min(MAX_DURATION_SECS)),
                    expect: a.expect,
                    max_ids: a.max_ids,
                    out: a.out,
                })
                .await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            Command::KafkaIngest(a) => {
                if a.count > 10_000_000 {
                    bail!("--count is capped at 10,000,000");
                }
                let report = kafka::run(kafka::IngestConfig {
                    bootstrap: a.bootstrap,
                    commands: a.commands_topic,
                    replies: a.replies_topic,
                    events: a.events_topic,
                    merchant: a.merchant,
                    count: a.count,
                    rate: a.rate,
                    duration: Duration::from_secs(a.duration.min(MAX_DURATION_SECS)),
                    out: a.out,
                    cpu_pids: a.cpu_pids,
                })
                .await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            Command::InProcess(a) => {
                if a.concurrency > 65_536 || a.reads > 1_000 {
                    bail!("--concurrency is capped at 65,536 and --reads at 1,000");
                }
                let report = inproc::run(inproc::Plan {
                    config: a.config,
                    data_dir: a.data_dir,
                    concurrency: a.concurrency,
                    duration: Duration::from_secs(a.duration.min(MAX_DURATION_SECS)),
                    reads: a.reads,
                    run_id: run_id(),
                })
                .await?;
                if let Some(dir) = a.out.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&a.out, serde_json::to_string_pretty(&report)?)?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
        }
    })
}

/// A run id: unique per run, short, and valid inside merchant order numbers and nonces.
fn run_id() -> String {
    let ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let mix = baseline::splitmix(ms as u64 ^ u64::from(std::process::id()));
    format!("{:x}{:04x}", ms, mix & 0xffff)
}

/// Refuses non-loopback hosts unless allowed.
fn check_loopback(url: &str, allow_remote: bool) -> anyhow::Result<()> {
    let parsed: hyper::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    let host = parsed.host().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback && !allow_remote {
        bail!(
            "{url} is not a loopback address; load tests target this machine only unless \
             --allow-remote is given (and you own the target)"
        );
    }
    Ok(())
}

async fn paycore_target(t: &TargetArgs, run_id: &str) -> anyhow::Result<Paycore> {
    http_target("paycore", &t.url, t, run_id).await
}

async fn http_target(
    name: &'static str,
    url: &str,
    t: &TargetArgs,
    run_id: &str,
) -> anyhow::Result<Paycore> {
    check_loopback(url, t.allow_remote)?;
    let p = Paycore::new(name, url, &t.merchant, &t.secret, run_id)?
        .with_channel(&t.channel, &t.channel_secret);
    if let Err(e) = p.probe("/readyz").await {
        bail!(
            "{name} is not ready at {url}: {e}\n  start it first (paycore: `cargo run --release -- serve`; \
             the baseline: `paycore-loadtest baseline-serve`), or let loadtest/run.sh start it"
        );
    }
    Ok(p)
}

/// The baseline's database: the given file, or a fresh one in the temp directory.
struct BaselineDb {
    path: PathBuf,
    remove: bool,
}

impl Drop for BaselineDb {
    fn drop(&mut self) {
        if self.remove {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
            }
        }
    }
}

async fn baseline_target(
    b: &BaselineArgs,
    run_id: &str,
) -> anyhow::Result<(RedisLock, BaselineDb)> {
    check_loopback(&b.redis_url, false)?;
    let db = match &b.baseline_db {
        Some(p) => BaselineDb {
            path: p.clone(),
            remove: false,
        },
        None => BaselineDb {
            path: std::env::temp_dir().join(format!("paycore-baseline-{run_id}.db")),
            remove: true,
        },
    };
    let backoff = Backoff {
        base: Duration::from_millis(b.lock_backoff_ms.max(1)),
        cap: Duration::from_millis(b.lock_backoff_cap_ms.max(1)),
        max_wait: Duration::from_millis(b.lock_wait_ms),
    };
    let target = RedisLock::connect(
        &b.redis_url,
        &db.path,
        b.baseline_connections,
        backoff,
        b.repeat_write,
        run_id,
    )
    .await
    .with_context(|| {
        format!(
            "the Redis-lock baseline needs Redis at {} (loadtest/run.sh starts one)",
            b.redis_url
        )
    })?;
    Ok((target, db))
}

async fn workload<T: Target>(
    target: T,
    w: &WorkloadArgs,
    run_id: &str,
) -> anyhow::Result<Workload<T>> {
    if target.name().starts_with("redis-lock") {
        let mix = Mix::parse(&w.mix).map_err(anyhow::Error::msg)?;
        if w.scenario == Kind::Lifecycle || (w.scenario == Kind::Mixed && mix.lifecycle > 0) {
            bail!(
                "the baseline has no payment channel: it runs create, hot, and mixed without lifecycle"
            );
        }
    }
    let mut wl = Workload::new(
        target,
        w.scenario,
        Mix::parse(&w.mix).map_err(anyhow::Error::msg)?,
        w.hot_pay_percent,
        Polling {
            first: Duration::from_millis(w.poll_first_ms),
            every: Duration::from_millis(w.poll_every_ms.max(1)),
            deadline: Duration::from_millis(w.paid_deadline_ms),
        },
        run_id,
    );
    wl.prepare(w.hot_orders).await?;
    Ok(wl)
}

/// How one measurement drives the target.
#[derive(Clone, Copy)]
enum Drive {
    Open {
        rate: Rate,
        duration: Duration,
        count: u64,
    },
    Closed {
        clients: usize,
        duration: Duration,
        count: u64,
    },
}

/// Runs one measurement of `wl` and answers its report.
async fn measure<T: Target>(
    wl: Arc<Workload<T>>,
    drive: Drive,
    bounds: Bounds,
    rss_pid: Option<u32>,
    cpu_pids: &[cpu::Watched],
) -> anyhow::Result<Report> {
    let start = Instant::now() + LEAD;
    let stats = Arc::new(Stats::new(start));
    let watcher = rss_pid.map(|pid| rss::watch(pid, stats.clone()));
    let cpu_start = cpu::start(cpu_pids);
    let label = format!("{}/{}", wl.kind().name(), wl.target().name());
    let (end, info) = match drive {
        Drive::Open {
            rate,
            duration,
            count,
        } => {
            let schedule = Schedule::new(rate, duration, count).map_err(anyhow::Error::msg)?;
            let end =
                engine::open_loop(wl.clone(), stats.clone(), &schedule, start, bounds, label).await;
            let info = RunInfo {
                scenario: wl.kind().name().into(),
                target: wl.target().name().into(),
                mode: "open-loop".into(),
                asked_rate: Some(schedule.asked_rate()),
                concurrency: None,
                planned: schedule.planned(),
            };
            (end, info)
        }
        Drive::Closed {
            clients,
            duration,
            count,
        } => {
            tokio::time::sleep_until(start.into()).await;
            let end = engine::closed_loop(
                wl.clone(),
                stats.clone(),
                clients,
                count,
                duration,
                bounds,
                label,
            )
            .await;
            let info = RunInfo {
                scenario: wl.kind().name().into(),
                target: wl.target().name().into(),
                mode: "closed-loop".into(),
                asked_rate: None,
                concurrency: Some(clients),
                planned: 0,
            };
            (end, info)
        }
    };
    if let Some(w) = watcher {
        w.abort();
        let _ = w.await;
    }
    // Every unit task has ended (or was aborted), so this is the last reference.
    let stats =
        Arc::try_unwrap(stats).map_err(|_| anyhow::anyhow!("a unit task outlived the run"))?;
    let rec = stats.finish();
    let mut report = Report::assemble(info, &rec, end);
    report.cpu = cpu_start.finish(report.units_ok);
    if matches!(drive, Drive::Closed { .. }) {
        // A closed loop plans nothing: what it did is what there was.
        report.run.planned = report.units_ok + report.units_failed;
        report.units_unfinished = 0;
    }
    Ok(report)
}

fn write_outputs(report: &Report, out: &OutputArgs, stem: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(&out.out).with_context(|| format!("creating {}", out.out.display()))?;
    let json_path = out.out.join(format!("{stem}.json"));
    std::fs::write(&json_path, serde_json::to_vec_pretty(report)?)?;
    let png_path = out.out.join(format!("{stem}.png"));
    if let Err(e) = plot::draw(report, &png_path) {
        eprintln!("warning: could not draw {}: {e}", png_path.display());
    }
    println!("{}", report.render());
    println!(
        "report: {}  plot: {}",
        json_path.display(),
        png_path.display()
    );
    Ok(())
}

fn bounds(load: &LoadArgs, quiet: bool) -> Bounds {
    Bounds {
        max_in_flight: load.max_in_flight,
        drain: Duration::from_secs(load.drain),
        first_index: 0,
        progress: !quiet,
    }
}

fn drive(load: &LoadArgs) -> anyhow::Result<Drive> {
    if load.duration == 0 || load.duration > MAX_DURATION_SECS {
        bail!("--duration must be within 1..={MAX_DURATION_SECS} seconds");
    }
    if load.count == 0 {
        bail!("--count must be positive");
    }
    let duration = Duration::from_secs(load.duration);
    Ok(match load.clients {
        Some(c) => Drive::Closed {
            clients: c.max(1),
            duration,
            count: load.count,
        },
        None => Drive::Open {
            rate: match load.ramp_to {
                Some(to) => Rate::Ramp {
                    from: load.rate,
                    to,
                },
                None => Rate::Constant(load.rate),
            },
            duration,
            count: load.count,
        },
    })
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    let id = run_id();
    let d = drive(&a.load)?;
    let b = bounds(&a.load, a.output.quiet);
    let report = match a.baseline {
        None => {
            let wl = workload(paycore_target(&a.target, &id).await?, &a.workload, &id).await?;
            measure(Arc::new(wl), d, b, a.output.rss_pid, &a.output.cpu_pids).await?
        }
        Some(BaselineKind::RedisLock) => {
            let (t, _db) = baseline_target(&a.baseline_args, &id).await?;
            let wl = workload(t, &a.workload, &id).await?;
            measure(Arc::new(wl), d, b, a.output.rss_pid, &a.output.cpu_pids).await?
        }
        Some(BaselineKind::RedisLockHttp) => {
            let t = http_target("redis-lock-http", &a.target.url, &a.target, &id).await?;
            let wl = workload(t, &a.workload, &id).await?;
            measure(Arc::new(wl), d, b, a.output.rss_pid, &a.output.cpu_pids).await?
        }
    };
    let stem = a
        .output
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", report.run.scenario, report.run.target));
    write_outputs(&report, &a.output, &stem)
}

async fn search<T: Target>(
    wl: Workload<T>,
    a: &FindMaxArgs,
) -> anyhow::Result<(Vec<Step>, Vec<Report>)> {
    let wl = Arc::new(wl);
    let s = Search {
        factor: a.factor.max(1.05),
        refinements: a.refinements,
        max_steps: a.max_steps.min(30),
        ceiling: a.ceiling,
    };
    let step_len = Duration::from_secs(a.step_secs.clamp(1, 60));
    let (mut steps, mut reports) = (Vec::new(), Vec::new());
    while let Some(rate) = s.next(a.start_rate, &steps) {
        let bounds = Bounds {
            max_in_flight: 4096,
            drain: Duration::from_secs(5),
            // Fresh order numbers for every step.
            first_index: steps.len() as u64 * 1_000_000_000,
            progress: !a.output.quiet,
        };
        let drive = Drive::Open {
            rate: Rate::Constant(rate),
            duration: step_len,
            count: u64::MAX,
        };
        let report = measure(
            wl.clone(),
            drive,
            bounds,
            a.output.rss_pid,
            &a.output.cpu_pids,
        )
        .await?;
        let step = findmax::judge(&report, rate, a.p99_ms);
        println!(
            "  step {:>2}: asked {:>8.0}/s achieved {:>8.0}/s p99 {:>8.3} ms errors {:>5.2}% -> {}",
            steps.len() + 1,
            step.rate,
            step.achieved,
            step.p99_ms,
            step.error_share * 100.0,
            if step.held { "held" } else { "not held" }
        );
        steps.push(step);
        reports.push(report);
        // Let the target settle (queues drain, connections idle) between steps.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok((steps, reports))
}

async fn find_max(a: FindMaxArgs) -> anyhow::Result<()> {
    let id = run_id();
    let (steps, reports) = match a.baseline {
        None => {
            let wl = workload(paycore_target(&a.target, &id).await?, &a.workload, &id).await?;
            search(wl, &a).await?
        }
        Some(BaselineKind::RedisLock) => {
            let (t, _db) = baseline_target(&a.baseline_args, &id).await?;
            let wl = workload(t, &a.workload, &id).await?;
            search(wl, &a).await?
        }
        Some(BaselineKind::RedisLockHttp) => {
            let t = http_target("redis-lock-http", &a.target.url, &a.target, &id).await?;
            let wl = workload(t, &a.workload, &id).await?;
            search(wl, &a).await?
        }
    };
    let best = Search::best(&steps);
    let target = reports
        .first()
        .map(|r| r.run.target.clone())
        .unwrap_or_default();
    match best {
        Some(b) => println!(
            "find-max {}/{}: highest rate held with p99 <= {} ms: {:.0} units/s (p99 {:.3} ms)",
            a.workload.scenario.name(),
            target,
            a.p99_ms,
            b.rate,
            b.p99_ms
        ),
        None => println!(
            "find-max {}/{}: no rate held with p99 <= {} ms",
            a.workload.scenario.name(),
            target,
            a.p99_ms
        ),
    }
    let stem = a
        .output
        .name
        .clone()
        .unwrap_or_else(|| format!("findmax-{}-{target}", a.workload.scenario.name()));
    std::fs::create_dir_all(&a.output.out)?;
    let path = a.output.out.join(format!("{stem}.json"));
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&json!({
            "scenario": a.workload.scenario.name(),
            "target": target,
            "p99_bound_ms": a.p99_ms,
            "best": best,
            "steps": steps,
            "reports": reports,
        }))?,
    )?;
    // The plot of the held step closest to the best shows what "held" looked like.
    if let Some(i) = best.and_then(|b| steps.iter().position(|s| s.rate == b.rate)) {
        let png = a.output.out.join(format!("{stem}.png"));
        if let Err(e) = plot::draw(&reports[i], &png) {
            eprintln!("warning: could not draw {}: {e}", png.display());
        }
    }
    println!("report: {}", path.display());
    Ok(())
}

async fn compare(a: CompareArgs) -> anyhow::Result<()> {
    if a.duration == 0 || a.duration > MAX_DURATION_SECS {
        bail!("--duration must be within 1..={MAX_DURATION_SECS} seconds");
    }
    let id = run_id();
    let duration = Duration::from_secs(a.duration);
    let closed = Drive::Closed {
        clients: a.clients.max(1),
        duration,
        count: u64::MAX,
    };
    let b = |first_index| Bounds {
        max_in_flight: 4096,
        drain: Duration::from_secs(10),
        first_index,
        progress: !a.output.quiet,
    };
    let pc = Arc::new(workload(paycore_target(&a.target, &id).await?, &a.workload, &id).await?);
    let (bl_target, _db) = baseline_target(&a.baseline_args, &id).await?;
    let bl = Arc::new(workload(bl_target, &a.workload, &id).await?);
    let bh = match &a.baseline_url {
        Some(url) => Some(Arc::new(
            workload(
                http_target("redis-lock-http", url, &a.target, &id).await?,
                &a.workload,
                &id,
            )
            .await?,
        )),
        None => None,
    };

    let mut drives = vec![("closed", closed, 0u64)];
    if let Some(rate) = a.rate {
        let open = Drive::Open {
            rate: Rate::Constant(rate),
            duration,
            count: u64::MAX,
        };
        drives.push(("open", open, 1_000_000_000));
    }
    let scenario = a.workload.scenario.name();
    let worst_p99 = |r: &Report| {
        r.latency
            .iter()
            .filter(|(k, _)| !findmax::NOT_LATENCY.contains(&k.as_str()))
            .map(|(_, l)| l.p99_ms)
            .fold(0.0, f64::max)
    };
    let mut summary = Vec::new();
    for (mode, drive, first) in drives {
        // The same workload against each system, one after the other, in this one run.
        // The watched processes are paycore's (and its simulator's): only its run counts them.
        let p = measure(pc.clone(), drive, b(first), None, &a.output.cpu_pids).await?;
        let mut others = vec![measure(bl.clone(), drive, b(first), None, &[]).await?];
        if let Some(bh) = &bh {
            others.push(measure(bh.clone(), drive, b(first), None, &[]).await?);
        }
        let stem = format!("compare-{scenario}-{mode}");
        write_outputs(&p, &a.output, &format!("{stem}-paycore"))?;
        for q in &others {
            write_outputs(q, &a.output, &format!("{stem}-{}", q.run.target))?;
            let ratio = p.ok_rate / q.ok_rate.max(1e-9);
            println!(
                "compare {scenario} ({mode} loop): paycore {:.0} ok units/s (p99 {:.2} ms), {} {:.0} ok units/s (p99 {:.2} ms): ratio {ratio:.2}x",
                p.ok_rate,
                worst_p99(&p),
                q.run.target,
                q.ok_rate,
                worst_p99(q)
            );
            summary.push(json!({
                "mode": mode,
                "baseline": q.run.target,
                "paycore_ok_per_s": p.ok_rate,
                "baseline_ok_per_s": q.ok_rate,
                "ratio": ratio,
                "paycore_p99_ms": worst_p99(&p),
                "baseline_p99_ms": worst_p99(q),
                "paycore_errors": p.errors,
                "baseline_errors": q.errors,
                "baseline_answers": q.answers,
            }));
        }
    }
    std::fs::create_dir_all(&a.output.out)?;
    let path = a.output.out.join(format!("compare-{scenario}.json"));
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&json!({
            "scenario": scenario,
            "clients": a.clients,
            "duration_s": a.duration,
            "repeat_write": format!("{:?}", a.baseline_args.repeat_write),
            "results": summary,
        }))?,
    )?;
    println!("report: {}", path.display());
    Ok(())
}

async fn baseline_serve(a: ServeArgs) -> anyhow::Result<()> {
    check_loopback(&format!("http://{}:{}", a.bind, a.port), false)?;
    let id = run_id();
    let (core, _db) = baseline_target(&a.baseline_args, &id).await?;
    baseline_server::serve(
        core,
        &a.merchant,
        &a.secret,
        &a.channel_secret,
        &a.bind,
        a.port,
        a.workers,
    )
    .await
}

async fn baseline_check(a: BaselineArgs) -> anyhow::Result<()> {
    let id = run_id();
    check_loopback(&a.redis_url, false)?;
    let db = BaselineDb {
        path: a.baseline_db.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("paycore-baseline-check-{id}.db"))
        }),
        remove: a.baseline_db.is_none(),
    };
    baseline::self_check(&a.redis_url, &db.path).await?;
    println!("baseline check passed: token consumed once, lock exclusive, release by owner only");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_by_default() {
        assert!(check_loopback("http://127.0.0.1:8080", false).is_ok());
        assert!(check_loopback("http://localhost:8080", false).is_ok());
        assert!(check_loopback("http://[::1]:8080", false).is_ok());
        assert!(check_loopback("redis://127.0.0.1:6379", false).is_ok());
        assert!(check_loopback("http://10.0.0.5:8080", false).is_err());
        assert!(check_loopback("http://example.com", false).is_err());
        assert!(check_loopback("http://10.0.0.5:8080", true).is_ok());
    }

    #[test]
    fn run_ids_fit_order_numbers_and_nonces() {
        let id = run_id();
        let no = format!("LT{id}-hot-99");
        assert!(paycore::domain::MerchantOrderNo::parse(&no).is_ok(), "{no}");
        let nonce = format!("lt{id}-ffffffff");
        assert!(paycore::http::auth::NONCE_LEN.contains(&nonce.len()));
    }
}
