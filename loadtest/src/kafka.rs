//! `kafka-ingest`: create commands through Kafka. Produces `--count` create commands to the
//! command topic (as fast as the producer takes them, or at `--rate`), reads the replies and the
//! events topic from their ends, and reports how many durable orders with replies paycore
//! made per second, each reply's latency from the moment its command was handed to the
//! producer, and how far `order.created` events reached the topic after their commit
//! (`occurred_at`, stamped just before the commit). Bounded by `--count` and `--duration`.

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Most commands handed to the producer and not yet acknowledged.
const MAX_UNACKED: usize = 20_000;

/// Settings of one run.
pub struct IngestConfig {
    /// Broker list.
    pub bootstrap: String,
    /// paycore's command topic.
    pub commands: String,
    /// paycore's reply topic.
    pub replies: String,
    /// paycore's event topic.
    pub events: String,
    /// The merchant the commands name.
    pub merchant: String,
    /// Commands to send.
    pub count: usize,
    /// Commands per second; 0 sends as fast as the producer takes them.
    pub rate: u64,
    /// Longest run.
    pub duration: Duration,
    /// Where the JSON goes.
    pub out: PathBuf,
    /// Processes whose CPU per answered command is reported.
    pub cpu_pids: Vec<crate::cpu::Watched>,
}

/// The JSON report.
#[derive(Serialize)]
pub struct IngestReport {
    /// Commands sent.
    pub sent: usize,
    /// Distinct replies received.
    pub replies: usize,
    /// Replies by status.
    pub by_status: BTreeMap<u16, usize>,
    /// From the first command handed to the producer to the last reply, seconds.
    pub seconds: f64,
    /// Replies with 201 per second over that span.
    pub created_per_sec: f64,
    /// Reply latency from the command's send, ms: p50, p90, p99, max.
    pub reply_latency_ms: BTreeMap<String, f64>,
    /// `order.created` events of this run seen on the event topic.
    pub created_events: usize,
    /// Their lag behind the commit (`occurred_at`) on arrival, ms: p50, p90, p99, max.
    pub event_lag_ms: BTreeMap<String, f64>,
    /// CPU of the watched processes (`--cpu-pid`) per 201 reply, by name.
    pub cpu: BTreeMap<String, crate::cpu::CpuUse>,
}

fn percentiles(h: &Histogram<u64>) -> BTreeMap<String, f64> {
    let ms = |v: u64| v as f64 / 1_000.0;
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0)]
        .iter()
        .map(|(k, q)| (k.to_string(), ms(h.value_at_quantile(q / 100.0))))
        .chain(std::iter::once(("max".to_string(), ms(h.max()))))
        .collect()
}

/// A consumer assigned every partition of `topic` at its end (no group: nothing is committed).
fn at_end(bootstrap: &str, topic: &str) -> anyhow::Result<StreamConsumer> {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "paycore-loadtest")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("metadata of {topic}"))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        bail!("topic {topic} does not exist");
    };
    if t.partitions().is_empty() {
        bail!("topic {topic} has no partitions (does it exist?)");
    }
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        let (_, high) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        tpl.add_partition_offset(topic, p.id(), Offset::Offset(high))?;
    }
    c.assign(&tpl)?;
    Ok(c)
}

#[derive(Default)]
struct Seen {
    replies: usize,
    by_status: BTreeMap<u16, usize>,
    last_reply: Option<Instant>,
    created_events: usize,
}

/// Runs the benchmark.
pub async fn run(cfg: IngestConfig) -> anyhow::Result<IngestReport> {
    if cfg.count == 0 {
        bail!("--count must be positive");
    }
    let run_id = format!(
        "lt{}",
        OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
    );
    let replies = at_end(&cfg.bootstrap, &cfg.replies)?;
    let events = at_end(&cfg.bootstrap, &cfg.events)?;
    let sent_at: Arc<Vec<Mutex<Option<Instant>>>> =
        Arc::new((0..cfg.count).map(|_| Mutex::new(None)).collect());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let lag = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let deadline = Instant::now() + cfg.duration;

    let prefix = format!("{run_id}-");
    let reply_task = {
        let (seen, latency, sent_at, prefix, count) = (
            seen.clone(),
            latency.clone(),
            sent_at.clone(),
            prefix.clone(),
            cfg.count,
        );
        tokio::spawn(async move {
            let mut done = vec![false; count];
            loop {
                let Ok(Ok(m)) = tokio::time::timeout_at(deadline.into(), replies.recv()).await
                else {
                    return;
                };
                let Some(v) = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                else {
                    continue;
                };
                let Some(i) = v["request_id"]
                    .as_str()
                    .and_then(|id| id.strip_prefix(&prefix))
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|i| *i < count)
                else {
                    continue;
                };
                if std::mem::replace(&mut done[i], true) {
                    continue; // a redelivered reply
                }
                let now = Instant::now();
                if let Some(t) = *sent_at[i].lock().unwrap() {
                    let _ = latency
                        .lock()
                        .unwrap()
                        .record(now.duration_since(t).as_micros() as u64);
                }
                let mut s = seen.lock().unwrap();
                s.replies += 1;
                *s.by_status
                    .entry(v["status"].as_u64().unwrap_or(0) as u16)
                    .or_default() += 1;
                s.last_reply = Some(now);
                if s.replies == count {
                    return;
                }
            }
        })
    };
    let event_task = {
        let (seen, lag, order_prefix, count) =
            (seen.clone(), lag.clone(), format!("{run_id}-"), cfg.count);
        tokio::spawn(async move {
            loop {
                let Ok(Ok(m)) = tokio::time::timeout_at(deadline.into(), events.recv()).await
                else {
                    return;
                };
                let now = OffsetDateTime::now_utc();
                let Some(v) = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                else {
                    continue;
                };
                if v["type"] != "order.created"
                    || !v["data"]["merchant_order_no"]
                        .as_str()
                        .is_some_and(|n| n.starts_with(&order_prefix))
                {
                    continue;
                }
                let Some(at) = v["occurred_at"].as_str().and_then(|s| {
                    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
                }) else {
                    continue;
                };
                let us = (now - at).whole_microseconds().max(0) as u64;
                let _ = lag.lock().unwrap().record(us);
                let mut s = seen.lock().unwrap();
                s.created_events += 1;
                if s.created_events == count {
                    return;
                }
            }
        })
    };

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create()?;
    let cpu_start = crate::cpu::start(&cfg.cpu_pids);
    let started = Instant::now();
    let gap = (cfg.rate > 0).then(|| Duration::from_secs_f64(1.0 / cfg.rate as f64));
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    for i in 0..cfg.count {
        if let Some(gap) = gap {
            let due = started + gap * i as u32;
            tokio::time::sleep_until(due.into()).await;
        }
        if Instant::now() >= deadline {
            break;
        }
        while pending.len() >= MAX_UNACKED {
            match pending.next().await {
                Some(Ok(Err((e, _)))) => bail!("a command was not produced: {e}"),
                Some(Err(_)) => bail!("the producer went away"),
                _ => {}
            }
        }
        let cmd = serde_json::json!({
            "request_id": format!("{prefix}{i}"), "merchant_id": cfg.merchant,
            "command": "create", "merchant_order_no": format!("{prefix}{i}"),
            "amount": 1_000, "business_type": "BillBuy", "channel": "sim",
        });
        let payload = serde_json::to_vec(&cmd)?;
        let key = format!("{prefix}{i}");
        *sent_at[i].lock().unwrap() = Some(Instant::now());
        // Enqueued now (an unpolled `send` future would enqueue nothing until polled, which
        // turned a paced run into bursts); a full queue waits for deliveries.
        let delivery = loop {
            match producer.send_result(FutureRecord::to(&cfg.commands).key(&key).payload(&payload))
            {
                Ok(d) => break d,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    match pending.next().await {
                        Some(Ok(Err((e, _)))) => bail!("a command was not produced: {e}"),
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                        _ => {}
                    }
                }
                Err((e, _)) => bail!("a command was not enqueued: {e}"),
            }
        };
        pending.push(delivery);
    }
    while let Some(r) = pending.next().await {
        match r {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("a command was not produced: {e}"),
            Err(_) => bail!("the producer went away"),
        }
    }
    let sent = sent_at
        .iter()
        .filter(|t| t.lock().unwrap().is_some())
        .count();
    let _ = reply_task.await;
    let _ = event_task.await;
    let s = seen.lock().unwrap();
    let seconds = s
        .last_reply
        .map_or(0.0, |t| t.duration_since(started).as_secs_f64());
    let created = s.by_status.get(&201).copied().unwrap_or(0);
    let report = IngestReport {
        sent,
        replies: s.replies,
        by_status: s.by_status.clone(),
        seconds,
        created_per_sec: if seconds > 0.0 {
            created as f64 / seconds
        } else {
            0.0
        },
        reply_latency_ms: percentiles(&latency.lock().unwrap()),
        created_events: s.created_events,
        event_lag_ms: percentiles(&lag.lock().unwrap()),
        cpu: cpu_start.finish(created as u64),
    };
    if let Some(dir) = cfg.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&cfg.out, serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}
