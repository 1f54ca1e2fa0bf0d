//! End to end against a real Apache Kafka broker (`scripts/kafka.sh start`; `.ci/run` runs
//! this with `--ignored`): commands in, replies and events out, paycore killed with SIGKILL in
//! the middle of the stream and started again. Then every command has one effect and one
//! reply (a redelivered reply is byte-identical), no event is missing or out of order per
//! order, and `paycore ledger verify` passes.
//!
//! The channel simulator runs as its own process (`paycore channel-sim`), so the payments it
//! holds survive paycore's crash as a real channel's would.
//!
//! Broker: `E2E_KAFKA_BOOTSTRAP` (default 127.0.0.1:9092). Topics are made per run.

mod support;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Reaped, free_port};

/// Orders paid (half of them refunded in part).
const PAID: usize = 240;
/// Orders created and then closed unpaid.
const CLOSED: usize = 60;
/// Orders created in all (those beyond PAID + CLOSED stay CREATED).
const CREATES: usize = 1_500;
const MERCHANT: &str = "e2e";
const PARTITIONS: i32 = 3;

fn bootstrap() -> String {
    std::env::var("E2E_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

struct Topics {
    commands: String,
    replies: String,
    events: String,
    dlq: String,
    group: String,
}

fn config(dir: &Path, port: u16, sim: u16, biller: u16, t: &Topics) -> String {
    format!(
        r#"
[server]
port = {port}
[storage.sqlite]
path = "{db}"
synchronous = "normal"
[stream]
kind = "kafka"
[stream.kafka]
bootstrap_servers = "{bootstrap}"
events_topic = "{events}"
[stream.kafka.commands]
enabled = true
topic = "{commands}"
replies_topic = "{replies}"
dlq_topic = "{dlq}"
group_id = "{group}"
[stream.kafka.properties]
"session.timeout.ms" = "6000"
[orders]
# A write-off that fails under the test's burst (no business-system slot within its timeout) is
# retried within seconds, not the default 15 minutes.
fulfillment_retry_ms = [1000, 2000, 5000, 10000, 20000, 30000, 60000, 60000]
[notifications]
enabled = false
[simulator]
in_process = false
port = {sim}
biller_port = {biller}
[simulator.behaviour]
pay_delay_ms_min = 50
pay_delay_ms_max = 200
[channels.sim]
kind = "sim"
base_url = "http://127.0.0.1:{sim}"
secret = "sim-secret-change-me"
[[merchants]]
id = "{MERCHANT}"
secret = "e2e-secret-0123456789abcdef"
channels = ["sim"]
biller = {{ url = "http://127.0.0.1:{biller}", secret = "biller-secret-change-me" }}
"#,
        db = dir.join("paycore.db").display(),
        bootstrap = bootstrap(),
        events = t.events,
        commands = t.commands,
        replies = t.replies,
        dlq = t.dlq,
        group = t.group,
    )
}

fn paycore(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_paycore"));
    c.arg("--config").arg(config).args(args);
    // The config file alone decides: PAYCORE_* variables of this process would override it.
    for (k, _) in std::env::vars() {
        if k.starts_with("PAYCORE_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

fn spawn(config: &Path, args: &[&str], log: &Path) -> Reaped {
    let out = std::fs::File::create(log).unwrap();
    paycore(config, args)
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .map(Reaped)
        .expect("start paycore")
}

async fn wait_ready(port: u16, within: Duration, log: &Path) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status().is_success()
        {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "paycore not ready on :{port}; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn readyz(port: u16) -> Value {
    reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null)
}

/// A consumer that keeps every message of `topic` from the beginning.
fn collect(topic: &str, group: &str) -> (Arc<Seen>, StreamConsumer) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    (Arc::new(Mutex::new(Vec::new())), consumer)
}

fn drain(sink: Arc<Seen>, consumer: StreamConsumer) {
    tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(m) => {
                    let value = m
                        .payload()
                        .and_then(|p| serde_json::from_slice(p).ok())
                        .unwrap_or(Value::Null);
                    let key = m.key().unwrap_or_default().to_vec();
                    sink.lock().unwrap().push((m.partition(), key, value));
                }
                Err(e) => {
                    eprintln!("consumer error: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

/// Produces `cmds` in order, one every `gap`, in the background.
fn paced(
    producer: &FutureProducer,
    topic: &str,
    cmds: Vec<Value>,
    gap: Duration,
) -> tokio::task::JoinHandle<()> {
    let (producer, topic) = (producer.clone(), topic.to_string());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(gap);
        for cmd in cmds {
            tick.tick().await;
            send(&producer, &topic, cmd).await;
        }
    })
}

async fn send(producer: &FutureProducer, topic: &str, cmd: Value) {
    let key = cmd["request_id"].as_str().unwrap().to_string();
    let payload = serde_json::to_vec(&cmd).unwrap();
    producer
        .send(
            FutureRecord::to(topic).key(&key).payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("command produced");
}

type Seen = Mutex<Vec<(i32, Vec<u8>, Value)>>;

/// Waits (up to 180 s) until the replies so far satisfy `pred`.
async fn wait_for(replies: &Seen, what: &str, pred: impl Fn(&HashMap<String, Vec<Value>>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if pred(&replies_by_id(replies)) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The replies so far, by request id.
fn replies_by_id(replies: &Seen) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for (_, _, v) in replies.lock().unwrap().iter() {
        if let Some(id) = v["request_id"].as_str() {
            out.entry(id.to_string()).or_default().push(v.clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real Kafka broker: scripts/kafka.sh start"]
async fn commands_through_a_crash_have_one_effect_one_reply_and_a_balanced_ledger() {
    let run = format!(
        "e2e-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let topics = Topics {
        commands: format!("{run}.commands"),
        replies: format!("{run}.replies"),
        events: format!("{run}.events"),
        dlq: format!("{run}.dlq"),
        group: format!("{run}.paycore"),
    };
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let new: Vec<_> = [
        &topics.commands,
        &topics.replies,
        &topics.events,
        &topics.dlq,
    ]
    .iter()
    .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
    .collect();
    for r in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .expect("topics created")
    {
        r.expect("topic created");
    }

    let dir = tempfile::tempdir().unwrap();
    let (port, sim, biller) = (free_port(), free_port(), free_port());
    let cfg = dir.path().join("paycore.toml");
    std::fs::write(&cfg, config(dir.path(), port, sim, biller, &topics)).unwrap();
    let mut channel = spawn(&cfg, &["channel-sim"], &dir.path().join("sim.log"));
    let mut core = spawn(&cfg, &["serve"], &dir.path().join("paycore-1.log"));
    wait_ready(
        port,
        Duration::from_secs(60),
        &dir.path().join("paycore-1.log"),
    )
    .await;

    let (replies, c) = collect(&topics.replies, &format!("{run}.test-replies"));
    drain(replies.clone(), c);
    let (events, c) = collect(&topics.events, &format!("{run}.test-events"));
    drain(events.clone(), c);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();

    // Creates, each sent twice (a gateway's retry): one order, one reply.
    // Creates, paced so that the crash lands among them; every tenth is sent twice (a
    // gateway's retry): one order, one reply.
    let total = PAID + CLOSED;
    let creates: Vec<Value> = (0..CREATES)
        .flat_map(|i| {
            let cmd = json!({
                "request_id": format!("c-{i}"), "merchant_id": MERCHANT, "command": "create",
                "merchant_order_no": format!("E2E-{i}"), "amount": 1_000 + i as i64,
                "business_type": "BillBuy", "channel": "sim", "expire_seconds": 3_600,
            });
            let copies = if i % 10 == 0 { 2 } else { 1 };
            std::iter::repeat_n(cmd, copies)
        })
        .collect();
    let sending = paced(
        &producer,
        &topics.commands,
        creates,
        Duration::from_millis(2),
    );
    // A message nobody can answer goes to the dead-letter topic and stops nothing.
    producer
        .send(
            FutureRecord::to(&topics.commands)
                .key("x")
                .payload(&b"{not json"[..]),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    // Crash in the middle of the creates.
    wait_for(&replies, "a third of the create replies", |r| {
        r.len() >= CREATES / 3
    })
    .await;
    core.kill().unwrap(); // SIGKILL
    core.wait().unwrap();
    let seen_at_crash = replies_by_id(&replies).len();
    core = spawn(&cfg, &["serve"], &dir.path().join("paycore-2.log"));
    wait_ready(
        port,
        Duration::from_secs(60),
        &dir.path().join("paycore-2.log"),
    )
    .await;
    sending.await.unwrap();
    wait_for(&replies, "every create reply", |r| {
        (0..CREATES).all(|i| r.contains_key(&format!("c-{i}")))
    })
    .await;
    let order_ids: Vec<String> = {
        let r = replies_by_id(&replies);
        (0..CREATES)
            .map(|i| {
                let reply = &r[&format!("c-{i}")][0];
                assert_eq!(reply["status"], 201, "create c-{i}: {reply}");
                reply["body"]["order_id"].as_str().unwrap().to_string()
            })
            .collect()
    };

    // Pay the first PAID, close the rest; crash again in the middle of the pays.
    let mut lifecycle: Vec<Value> = Vec::new();
    for (i, id) in order_ids.iter().enumerate().take(total) {
        lifecycle.push(if i < PAID {
            json!({"request_id": format!("p-{i}"), "merchant_id": MERCHANT,
                "command": "pay", "order_id": id, "pay_method": "native"})
        } else {
            json!({"request_id": format!("x-{i}"), "merchant_id": MERCHANT,
                "command": "close", "order_id": id})
        });
    }
    let sending = paced(
        &producer,
        &topics.commands,
        lifecycle,
        Duration::from_millis(10),
    );
    let pays = |r: &HashMap<String, Vec<Value>>| r.keys().filter(|k| k.starts_with("p-")).count();
    wait_for(&replies, "a third of the pay replies", |r| {
        pays(r) >= PAID / 3
    })
    .await;
    core.kill().unwrap();
    core.wait().unwrap();
    let pays_at_crash = pays(&replies_by_id(&replies));
    core = spawn(&cfg, &["serve"], &dir.path().join("paycore-3.log"));
    wait_ready(
        port,
        Duration::from_secs(60),
        &dir.path().join("paycore-3.log"),
    )
    .await;
    sending.await.unwrap();
    wait_for(&replies, "every pay and close reply", |r| {
        (0..PAID).all(|i| r.contains_key(&format!("p-{i}")))
            && (PAID..total).all(|i| r.contains_key(&format!("x-{i}")))
    })
    .await;

    // Refund half of the paid orders in part, once they are paid and written off at the
    // business system (a refund before that is refused: 409 fulfillment_pending).
    let of_type = |events: &Seen, ty: &str| -> HashSet<String> {
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, v)| v["type"] == ty)
            .map(|(_, _, v)| v["order_id"].as_str().unwrap().to_string())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while of_type(&events, "order.fulfilled").len() < PAID {
        let (paid, fulfilled) = (
            of_type(&events, "order.paid").len(),
            of_type(&events, "order.fulfilled").len(),
        );
        assert!(
            Instant::now() < deadline,
            "orders paid {paid}, fulfilled {fulfilled}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (i, id) in order_ids.iter().enumerate().take(PAID).step_by(2) {
        let cmd = json!({"request_id": format!("r-{i}"), "merchant_id": MERCHANT,
            "command": "refund", "order_id": id, "refund_no": format!("R-{i}"), "amount": 300});
        send(&producer, &topics.commands, cmd).await;
    }
    wait_for(&replies, "every refund reply", |r| {
        (0..PAID)
            .step_by(2)
            .all(|i| r.contains_key(&format!("r-{i}")))
    })
    .await;
    let refunded = (0..PAID).step_by(2).count();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, v)| v["type"] == "refund.succeeded")
            .map(|(_, _, v)| v["order_id"].as_str().unwrap().to_string())
            .collect::<HashSet<_>>()
            .len();
        if n == refunded {
            break;
        }
        if Instant::now() >= deadline {
            let done: HashSet<String> = events
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, _, v)| v["type"] == "refund.succeeded")
                .map(|(_, _, v)| v["order_id"].as_str().unwrap().to_string())
                .collect();
            let db = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
            let mut stuck = Vec::new();
            for id in order_ids.iter().take(PAID).step_by(2) {
                if done.contains(id) {
                    continue;
                }
                let body: String = db
                    .query_row("SELECT body FROM orders WHERE order_id = ?1", [id], |r| {
                        r.get(0)
                    })
                    .unwrap();
                let types: Vec<String> = db
                    .prepare("SELECT type FROM events WHERE order_id = ?1 ORDER BY seq")
                    .unwrap()
                    .query_map([id], |r| r.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let r = replies_by_id(&replies);
                let reply = order_ids
                    .iter()
                    .position(|o| o == id)
                    .and_then(|i| r.get(&format!("r-{i}")).cloned());
                stuck.push(format!(
                    "{id}: reply {reply:?}; outbox {types:?}; order {body}"
                ));
            }
            let kept = dir.keep();
            panic!(
                "refunds succeeded: {n} of {refunded}; not yet (files in {}):\n{}",
                kept.display(),
                stuck.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Replies: one per command; a copy (a redelivery's) is identical.
    let r = replies_by_id(&replies);
    assert!(
        seen_at_crash < CREATES,
        "the first crash came before the last create reply"
    );
    assert!(
        pays_at_crash < PAID,
        "the second crash came before the last pay reply"
    );
    for (id, copies) in &r {
        assert!(
            copies.windows(2).all(|w| w[0] == w[1]),
            "{id}: replies differ: {copies:?}"
        );
        let status = copies[0]["status"].as_u64().unwrap();
        // A pay the crash cut off after the channel opened the payment and before PAYING was
        // stored has no reply yet; the channel's callback may pay the order before the pay is
        // redelivered, which then answers what HTTP would: 409 already_paid (its first and only
        // reply; the order was charged once, checked below).
        let paid_meanwhile =
            id.starts_with("p-") && copies[0]["body"]["error"]["code"] == "already_paid";
        assert!(
            (200..300).contains(&status) || paid_meanwhile,
            "{id}: {}",
            copies[0]
        );
    }
    assert_eq!(r.len(), CREATES + PAID + CLOSED + refunded);

    // One effect each: orders, charges and refunds as the database and the channel saw them.
    let db = rusqlite::Connection::open(dir.path().join("paycore.db")).unwrap();
    let orders: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM orders WHERE merchant_id = ?1",
            [MERCHANT],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orders, CREATES as i64, "one order per create");
    let http = reqwest::Client::new();
    for (i, id) in order_ids.iter().enumerate() {
        let audit: Value = http
            .get(format!(
                "http://127.0.0.1:{sim}/sim/v1/payments?out_trade_no={id}"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let payments = audit["payments"].as_array().map_or(0, Vec::len);
        let refunds = audit["refunds"].as_array().map_or(0, Vec::len);
        if i < PAID {
            assert_eq!(payments, 1, "order {i} charged once: {audit}");
            assert_eq!(refunds, usize::from(i % 2 == 0), "order {i}: {audit}");
        } else {
            assert_eq!(payments, 0, "order {i} never charged: {audit}");
        }
    }

    // Events: every committed event is on the topic, keyed by its order, in version order.
    let outbox: HashMap<String, (String, u64)> = {
        let mut stmt = db
            .prepare("SELECT event_id, order_id, version FROM events")
            .unwrap();
        stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (r.get::<_, String>(1)?, r.get::<_, i64>(2)? as u64),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let on_topic: HashSet<String> = events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, _, v)| v["event_id"].as_str().map(str::to_string))
            .collect();
        let missing = outbox.keys().filter(|id| !on_topic.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} committed events not on the topic"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut per_order: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    let mut seen = HashSet::new();
    for (partition, key, v) in events.lock().unwrap().iter() {
        let order = v["order_id"].as_str().unwrap().to_string();
        assert_eq!(key.as_slice(), order.as_bytes(), "keyed by order id");
        assert_eq!(
            *partition_of.entry(order.clone()).or_insert(*partition),
            *partition
        );
        // A copy republished after a crash repeats what came before; its first delivery counts.
        if seen.insert(v["event_id"].as_str().unwrap().to_string()) {
            per_order
                .entry(order)
                .or_default()
                .push(v["version"].as_u64().unwrap());
        }
    }
    for (order, versions) in &per_order {
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "{order}: versions out of order {versions:?}"
        );
    }
    assert_eq!(per_order.len(), CREATES);

    // The ledger, once it has taken in every event.
    let deadline = Instant::now() + Duration::from_secs(60);
    while readyz(port).await["consumers"]["ledger"]["lag"] != 0 {
        assert!(
            Instant::now() < deadline,
            "ledger lag: {}",
            readyz(port).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let verify = paycore(&cfg, &["ledger", "verify"]).output().unwrap();
    assert!(
        verify.status.success(),
        "ledger verify: {}\n{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // The DLQ holds the bad message.
    let (dlq, c) = collect(&topics.dlq, &format!("{run}.test-dlq"));
    drain(dlq.clone(), c);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dlq.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "nothing on the dead-letter topic"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    term(&core);
    let _ = core.wait();
    let _ = channel.kill();
    let _ = channel.wait();
}

/// SIGTERM: a clean stop.
fn term(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}
