//! Kafka out and in against librdkafka's mock cluster (in process, the real protocol; nothing
//! to install): events on the topic keyed by order id in version order with their headers, the
//! relay's cursor held while the broker is down; commands answered as HTTP answers them, once,
//! with replies keyed by request id, dead letters for what cannot be answered.

use crate::common::{TestApp, spawn_app, wait_until};
use paycore::config::Settings;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const EVENTS: &str = "paycore.order-events";
const COMMANDS: &str = "paycore.commands";
const REPLIES: &str = "paycore.replies";
const DLQ: &str = "paycore.commands.dlq";
/// The first consumer-group assignment takes about 3 s on the mock cluster; a rebalance 5 s.
const GROUP_DEADLINE: Duration = Duration::from_secs(40);

type Mock = MockCluster<'static, DefaultProducerContext>;

fn mock_cluster() -> Mock {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(EVENTS, 3, 1).expect("events topic");
    mock.create_topic(COMMANDS, 2, 1).expect("commands topic");
    mock.create_topic(REPLIES, 1, 1).expect("replies topic");
    mock.create_topic(DLQ, 1, 1).expect("dead-letter topic");
    mock
}

fn kafka_settings(s: &mut Settings, servers: &str, events: bool, commands: bool) {
    if events {
        s.stream.kind = "kafka".into();
    }
    let k = &mut s.stream.kafka;
    k.bootstrap_servers = servers.to_string();
    k.message_timeout_ms = 2_000;
    k.linger_ms = 1;
    k.commands.enabled = commands;
    k.commands.commit_interval_ms = 100;
    k.commands.drain_timeout_ms = 10_000;
    // The mock cluster waits up to the session timeout for a group's members to rejoin after
    // one left (a restarted paycore); librdkafka's default is 45 s.
    k.properties
        .insert("session.timeout.ms".into(), "6000".into());
    k.properties
        .insert("heartbeat.interval.ms".into(), "500".into());
}

/// Reads a topic from its beginning, without a group (no rebalance to wait for).
struct Reader {
    consumer: StreamConsumer,
    seen: Vec<OwnedMessage>,
}

impl Reader {
    fn open(servers: &str, topic: &str, partitions: i32) -> Self {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", servers)
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        Self {
            consumer,
            seen: Vec::new(),
        }
    }

    /// Reads until `done(all seen so far)` holds; fails naming `what` after `limit`.
    async fn until(
        &mut self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[OwnedMessage]) -> bool,
    ) -> &[OwnedMessage] {
        let deadline = Instant::now() + limit;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what}: not seen within {limit:?}; seen {} messages",
                self.seen.len()
            );
            if let Ok(Ok(m)) = tokio::time::timeout(left, self.consumer.recv()).await {
                self.seen.push(m.detach());
            }
        }
        &self.seen
    }
}

fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn value(m: &OwnedMessage) -> Value {
    serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or(Value::Null)
}

fn key(m: &OwnedMessage) -> String {
    String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned()
}

/// Events of an order as they arrived, by order id.
fn by_order(msgs: &[OwnedMessage]) -> HashMap<String, Vec<&OwnedMessage>> {
    let mut m: HashMap<String, Vec<&OwnedMessage>> = HashMap::new();
    for msg in msgs {
        m.entry(key(msg)).or_default().push(msg);
    }
    m
}

fn has_types(msgs: &[OwnedMessage], order: &str, types: &[&str]) -> bool {
    let seen: Vec<String> = msgs
        .iter()
        .filter(|m| key(m) == order)
        .map(|m| value(m)["type"].as_str().unwrap_or("").to_string())
        .collect();
    types.iter().all(|t| seen.iter().any(|s| s == t))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_reach_the_topic_keyed_by_order_in_version_order_with_their_headers() {
    let mock = mock_cluster();
    let servers = mock.bootstrap_servers();
    let t = spawn_app(|s| kafka_settings(s, &servers, true, false)).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let id = t.create(&format!("KE-{i}"), 100 + i).await["order_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(t.pay(&id).await.status, 202);
        ids.push(id);
    }
    for id in &ids {
        t.wait_status(id, "PAID").await;
    }
    let ready = t.call("GET", "/readyz", None).await;
    assert_eq!(
        (ready.status, ready.body["stream"].as_str()),
        (200, Some("ok"))
    );

    let mut events = Reader::open(&servers, EVENTS, 3);
    let seen = events
        .until(
            "every order's created, paying and paid",
            Duration::from_secs(30),
            |m| {
                ids.iter()
                    .all(|id| has_types(m, id, &["order.created", "order.paying", "order.paid"]))
            },
        )
        .await;
    let orders = by_order(seen);
    assert_eq!(
        orders.len(),
        ids.len(),
        "keys are order ids: {:?}",
        orders.keys()
    );
    let mut partitions_used = std::collections::HashSet::new();
    for id in &ids {
        let msgs = &orders[id];
        let partition = msgs[0].partition();
        partitions_used.insert(partition);
        let mut last_version = 0;
        for m in msgs {
            let v = value(m);
            assert_eq!(m.partition(), partition, "one order, one partition");
            assert_eq!(v["order_id"], id.as_str());
            let version = v["version"].as_u64().unwrap();
            assert!(
                version > last_version,
                "{id}: version {version} after {last_version}"
            );
            last_version = version;
            assert_eq!(
                header(m, "paycore-event-id").as_deref(),
                v["event_id"].as_str()
            );
            assert_eq!(
                header(m, "paycore-event-type").as_deref(),
                v["type"].as_str()
            );
            assert_eq!(
                header(m, "paycore-order-version"),
                Some(version.to_string())
            );
            assert_eq!(header(m, "paycore-schema").as_deref(), Some("1"));
            // The value is the codec's schema version 1, byte for byte.
            let decoded = paycore::streams::codec::decode(1, m.payload().unwrap()).unwrap();
            assert_eq!(
                paycore::streams::codec::encode(&decoded),
                m.payload().unwrap()
            );
            assert_eq!(header(m, "paycore-outbox-partition").as_deref(), Some("0"));
            let seq: u64 = header(m, "paycore-outbox-seq").unwrap().parse().unwrap();
            assert!(seq > 0);
            assert_eq!(
                v["data"]["order_id"],
                id.as_str(),
                "the order view rides along"
            );
        }
    }
    // Outbox positions grow in every partition's order (the relay publishes in commit order).
    for p in 0..3 {
        let seqs: Vec<u64> = seen
            .iter()
            .filter(|m| m.partition() == p)
            .map(|m| header(m, "paycore-outbox-seq").unwrap().parse().unwrap())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "partition {p}: {seqs:?}"
        );
    }
    t.stop().await;
}

async fn relay_cursor(t: &TestApp) -> u64 {
    t.app()
        .store()
        .cursor(paycore::streams::relay::CURSOR, 0)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_outage_holds_the_relay_cursor_and_the_relay_catches_up_after_it() {
    let mock = mock_cluster();
    let servers = mock.bootstrap_servers();
    let t = spawn_app(|s| kafka_settings(s, &servers, true, false)).await;
    let first = t.create("KO-1", 100).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut events = Reader::open(&servers, EVENTS, 3);
    events
        .until("the first order's event", Duration::from_secs(20), |m| {
            has_types(m, &first, &["order.created"])
        })
        .await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            relay_cursor(&t).await > 0
        })
        .await,
        "the relay stores its cursor after the broker's acknowledgement"
    );
    let before = relay_cursor(&t).await;

    mock.broker_down(-1).unwrap();
    let second = t.create("KO-2", 200).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Longer than two message timeouts (2 s each) and relay retries: the cursor must not move
    // while nothing is acknowledged.
    let held_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < held_until {
        assert_eq!(
            relay_cursor(&t).await,
            before,
            "cursor moved while the broker was down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = t.call("GET", "/readyz", None).await;
    assert_eq!(
        (ready.status, ready.body["stream"].as_str()),
        (503, Some("unreachable"))
    );

    mock.broker_up(-1).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            relay_cursor(&t).await > before
        })
        .await,
        "the relay moves on once the broker is back"
    );
    let seen = events
        .until("the second order's event", Duration::from_secs(30), |m| {
            has_types(m, &second, &["order.created"])
        })
        .await;
    assert!(
        by_order(seen)[&second]
            .iter()
            .all(|m| header(m, "paycore-event-type").is_some()),
        "published after the outage with its headers"
    );
    t.stop().await;
}

/// Sends commands as an upstream gateway would.
struct Gateway {
    producer: FutureProducer,
}

impl Gateway {
    fn new(servers: &str) -> Self {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", servers)
            .set("enable.idempotence", "true")
            .create()
            .expect("gateway producer");
        Self { producer }
    }

    async fn send_raw(&self, key: &str, payload: &[u8]) {
        self.producer
            .send(
                FutureRecord::to(COMMANDS).key(key).payload(payload),
                Duration::from_secs(5),
            )
            .await
            .expect("command acknowledged");
    }

    async fn send(&self, key: &str, command: Value) {
        self.send_raw(key, &serde_json::to_vec(&command).unwrap())
            .await;
    }
}

fn replies_for<'a>(msgs: &'a [OwnedMessage], request_id: &str) -> Vec<&'a OwnedMessage> {
    msgs.iter().filter(|m| key(m) == request_id).collect()
}

/// Waits for the `n`th reply (1-based) to `request_id`; answers its value.
async fn nth_reply(replies: &mut Reader, request_id: &str, n: usize) -> (Value, OwnedMessage) {
    let msgs = replies
        .until(&format!("reply {n} to {request_id}"), GROUP_DEADLINE, |m| {
            replies_for(m, request_id).len() >= n
        })
        .await;
    let m = replies_for(msgs, request_id)[n - 1].clone();
    (value(&m), m)
}

fn create_command(request_id: &str, merchant: &str, no: &str, amount: i64) -> Value {
    json!({"request_id": request_id, "merchant_id": merchant, "command": "create",
           "merchant_order_no": no, "amount": amount, "business_type": "BillBuy", "channel": "sim"})
}

/// The keys of an object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_pay_and_refund_commands_answer_what_http_answers() {
    let mock = mock_cluster();
    let servers = mock.bootstrap_servers();
    let t = spawn_app(|s| {
        kafka_settings(s, &servers, false, true);
        // Slow enough that the order is still PAYING when HTTP repeats the pay.
        s.simulator.behaviour.pay_delay_ms_min = 2_000;
        s.simulator.behaviour.pay_delay_ms_max = 2_000;
    })
    .await;
    let gw = Gateway::new(&servers);
    let mut replies = Reader::open(&servers, REPLIES, 1);

    gw.send("KC-1", create_command("req-create-1", "demo", "KC-1", 500))
        .await;
    let (reply, msg) = nth_reply(&mut replies, "req-create-1", 1).await;
    assert_eq!(reply["status"], 201, "{reply}");
    assert_eq!(
        (
            reply["request_id"].as_str(),
            reply["merchant_id"].as_str(),
            reply["command"].as_str()
        ),
        (Some("req-create-1"), Some("demo"), Some("create"))
    );
    assert_eq!(header(&msg, "paycore-status").as_deref(), Some("201"));
    assert_eq!(header(&msg, "paycore-replayed").as_deref(), Some("false"));
    let created = &reply["body"];
    let id = created["order_id"].as_str().unwrap().to_string();
    // The same body as GET answers now (nothing changed it yet), and the same shape as an
    // HTTP create's answer.
    let got = t.order(&id).await;
    assert_eq!(&got.body, created);
    let http_created = t.create("KC-HTTP-1", 500).await;
    assert_eq!(keys(created), keys(&http_created));
    for field in [
        "status",
        "amount",
        "currency",
        "business_type",
        "channel",
        "version",
    ] {
        assert_eq!(created[field], http_created[field], "{field}");
    }

    gw.send(
        &id,
        json!({"request_id": "req-pay-1", "merchant_id": "demo", "command": "pay",
                        "order_id": id, "pay_method": "native"}),
    )
    .await;
    let (reply, _) = nth_reply(&mut replies, "req-pay-1", 1).await;
    assert_eq!(reply["status"], 202, "{reply}");
    // HTTP answers a repeat while PAYING with the same answer: byte for byte what the command
    // was answered.
    let http_pay = t.pay(&id).await;
    assert_eq!(http_pay.status, 202);
    assert_eq!(http_pay.body, reply["body"]);

    t.wait_status(&id, "PAID").await;
    gw.send(
        &id,
        json!({"request_id": "req-refund-1", "merchant_id": "demo", "command": "refund",
                        "order_id": id, "refund_no": "KR-1", "amount": 200}),
    )
    .await;
    let (reply, _) = nth_reply(&mut replies, "req-refund-1", 1).await;
    assert_eq!(reply["status"], 202, "{reply}");
    let http_refund = t
        .call(
            "POST",
            &format!("/v1/orders/{id}/refunds"),
            Some(json!({"refund_no": "KR-1", "amount": 200})),
        )
        .await;
    assert_eq!(http_refund.status, 202);
    assert_eq!(keys(&reply["body"]), keys(&http_refund.body));
    for field in ["refund_id", "order_id", "refund_no", "amount", "created_at"] {
        assert_eq!(reply["body"][field], http_refund.body[field], "{field}");
    }

    // Errors are the contract's too: paying a paid order.
    gw.send(
        &id,
        json!({"request_id": "req-pay-2", "merchant_id": "demo", "command": "pay",
                        "order_id": id, "pay_method": "native"}),
    )
    .await;
    let (reply, _) = nth_reply(&mut replies, "req-pay-2", 1).await;
    let http_again = t.pay(&id).await;
    assert_eq!(reply["status"], http_again.status);
    assert_eq!(reply["body"], http_again.body);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_command_gets_the_same_reply_and_has_one_effect() {
    let mock = mock_cluster();
    let servers = mock.bootstrap_servers();
    let t = spawn_app(|s| kafka_settings(s, &servers, false, true)).await;
    let gw = Gateway::new(&servers);
    let mut replies = Reader::open(&servers, REPLIES, 1);

    let create = create_command("req-dup-1", "demo", "KD-1", 700);
    gw.send("KD-1", create.clone()).await;
    let (first, _) = nth_reply(&mut replies, "req-dup-1", 1).await;
    assert_eq!(first["status"], 201, "{first}");
    // The same command again, its keys in another order: the stored reply, byte for byte.
    let mut reordered = serde_json::Map::new();
    for (k, v) in create.as_object().unwrap().iter().rev() {
        reordered.insert(k.clone(), v.clone());
    }
    gw.send("KD-1", Value::Object(reordered)).await;
    let (second, msg) = nth_reply(&mut replies, "req-dup-1", 2).await;
    assert_eq!(second, first);
    assert_eq!(header(&msg, "paycore-replayed").as_deref(), Some("true"));
    let lookup = t
        .call("GET", "/v1/orders?merchant_order_no=KD-1", None)
        .await;
    assert_eq!(
        lookup.body["order_id"], first["body"]["order_id"],
        "one order"
    );
    assert_eq!(lookup.body["version"], 1);

    // The same request id with another command: refused, nothing done.
    gw.send("KD-2", create_command("req-dup-1", "demo", "KD-2", 999))
        .await;
    let (reused, _) = nth_reply(&mut replies, "req-dup-1", 3).await;
    assert_eq!(reused["status"], 409, "{reused}");
    assert_eq!(reused["body"]["error"]["code"], "request_id_reused");
    let none = t
        .call("GET", "/v1/orders?merchant_order_no=KD-2", None)
        .await;
    assert_eq!(none.status, 404, "the reused request id created nothing");

    // A create refused (no amount): a copy gets the stored refusal, marked replayed.
    let bad = create_command("req-dup-bad", "demo", "KD-BAD", 0);
    gw.send("KD-BAD", bad.clone()).await;
    let (refused, msg) = nth_reply(&mut replies, "req-dup-bad", 1).await;
    assert_eq!(refused["status"], 422, "{refused}");
    assert_eq!(header(&msg, "paycore-replayed").as_deref(), Some("false"));
    gw.send("KD-BAD", bad).await;
    let (again, msg) = nth_reply(&mut replies, "req-dup-bad", 2).await;
    assert_eq!(again, refused);
    assert_eq!(header(&msg, "paycore-replayed").as_deref(), Some("true"));

    // A pay repeated: the same reply, one payment at the channel.
    let id = first["body"]["order_id"].as_str().unwrap().to_string();
    let pay = json!({"request_id": "req-dup-pay", "merchant_id": "demo", "command": "pay",
                     "order_id": id, "pay_method": "native"});
    gw.send(&id, pay.clone()).await;
    gw.send(&id, pay).await;
    let (p1, _) = nth_reply(&mut replies, "req-dup-pay", 1).await;
    let (p2, _) = nth_reply(&mut replies, "req-dup-pay", 2).await;
    assert_eq!(p1["status"], 202, "{p1}");
    assert_eq!(p1, p2);
    t.wait_status(&id, "PAID").await;
    let audit = t.sim_audit(&id).await;
    assert_eq!(
        (
            audit["payments"].as_array().map(Vec::len),
            audit["charges"].as_array().map(Vec::len)
        ),
        (Some(1), Some(1)),
        "one payment opened, charged once: {audit}"
    );

    // A restart: offsets were committed at shutdown, so nothing answered is answered again.
    let dir = t.stop().await;
    let db = dir.path().join("paycore.db").to_string_lossy().into_owned();
    let t2 = spawn_app(|s| {
        kafka_settings(s, &servers, false, true);
        s.storage.sqlite.path = db.clone();
    })
    .await;
    gw.send(
        "KD-3",
        create_command("req-after-restart", "demo", "KD-3", 100),
    )
    .await;
    let (after, _) = nth_reply(&mut replies, "req-after-restart", 1).await;
    assert_eq!(after["status"], 201, "{after}");
    let seen = &replies.seen;
    assert_eq!(
        replies_for(seen, "req-dup-1").len(),
        3,
        "no command redelivered after the restart"
    );
    assert_eq!(replies_for(seen, "req-dup-pay").len(), 2);
    t2.stop().await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_that_cannot_be_answered_are_dead_letters_and_bad_commands_get_error_replies() {
    let mock = mock_cluster();
    let servers = mock.bootstrap_servers();
    let t = spawn_app(|s| kafka_settings(s, &servers, false, true)).await;
    let gw = Gateway::new(&servers);
    let mut replies = Reader::open(&servers, REPLIES, 1);
    let mut dead = Reader::open(&servers, DLQ, 1);

    // Same key: same partition, in this order. The malformed one must not stop the partition.
    gw.send_raw("KB", b"{not json").await;
    gw.send_raw("KB", br#"{"merchant_id": "demo", "command": "create"}"#)
        .await;
    gw.send("KB", create_command("req-after-bad", "demo", "KB-1", 100))
        .await;
    let (ok, _) = nth_reply(&mut replies, "req-after-bad", 1).await;
    assert_eq!(ok["status"], 201, "{ok}");
    let letters = dead
        .until("two dead letters", GROUP_DEADLINE, |m| m.len() >= 2)
        .await;
    assert_eq!(letters[0].payload(), Some(&b"{not json"[..]));
    assert_eq!(
        header(&letters[0], "paycore-dlq-reason").as_deref(),
        Some("malformed_json")
    );
    assert_eq!(
        header(&letters[0], "paycore-source-topic").as_deref(),
        Some(COMMANDS)
    );
    assert!(header(&letters[0], "paycore-source-offset").is_some());
    assert_eq!(key(&letters[0]), "KB");
    assert_eq!(
        header(&letters[1], "paycore-dlq-reason").as_deref(),
        Some("no_request_id")
    );

    // An unknown merchant, an unknown command, a bad field, an oversized command: error
    // replies, no effect.
    gw.send("KB", create_command("req-nobody", "nobody", "KB-2", 100))
        .await;
    let (r, _) = nth_reply(&mut replies, "req-nobody", 1).await;
    assert_eq!(
        (r["status"].as_u64(), r["body"]["error"]["code"].as_str()),
        (Some(401), Some("unknown_merchant"))
    );
    gw.send(
        "KB",
        json!({"request_id": "req-teleport", "merchant_id": "demo", "command": "teleport"}),
    )
    .await;
    let (r, _) = nth_reply(&mut replies, "req-teleport", 1).await;
    assert_eq!(
        (r["status"].as_u64(), r["body"]["error"]["code"].as_str()),
        (Some(422), Some("unknown_command"))
    );
    let mut bad_amount = create_command("req-bad-amount", "demo", "KB-3", 100);
    bad_amount["amount"] = json!(0);
    gw.send("KB", bad_amount).await;
    let (r, _) = nth_reply(&mut replies, "req-bad-amount", 1).await;
    assert_eq!(
        (r["status"].as_u64(), r["body"]["error"]["field"].as_str()),
        (Some(422), Some("amount"))
    );
    let mut big = create_command("req-big", "demo", "KB-4", 100);
    big["subject"] = json!("x".repeat(70 * 1024));
    gw.send("KB", big).await;
    let (r, _) = nth_reply(&mut replies, "req-big", 1).await;
    assert_eq!(
        (r["status"].as_u64(), r["body"]["error"]["code"].as_str()),
        (Some(413), Some("body_too_large"))
    );
    for no in ["KB-2", "KB-3", "KB-4"] {
        let r = t
            .call("GET", &format!("/v1/orders?merchant_order_no={no}"), None)
            .await;
        assert_eq!(r.status, 404, "{no} was not created");
    }
    let ready = t.call("GET", "/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["tasks"]["kafka-commands"]["state"], "running");
    let m = crate::common::metrics_text(&t).await;
    assert!(
        m.contains(r#"paycore_kafka_dead_letters_total{reason="malformed_json"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"paycore_kafka_commands_total{command="create",outcome="executed"}"#),
        "{m}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_beyond_the_in_flight_bound_wait_in_kafka_paused_and_are_all_answered_in_order() {
    let mock = mock_cluster();
    let servers = mock.bootstrap_servers();
    let t = spawn_app(|s| {
        kafka_settings(s, &servers, false, true);
        s.stream.kafka.commands.max_in_flight_per_partition = 1;
        s.stream.kafka.commands.max_in_flight = 1;
    })
    .await;
    let gw = Gateway::new(&servers);
    let mut replies = Reader::open(&servers, REPLIES, 1);
    const N: usize = 12;
    for i in 0..N {
        gw.send(
            "KP",
            create_command(&format!("req-bp-{i}"), "demo", &format!("KP-{i}"), 100),
        )
        .await;
    }
    let seen = replies
        .until("every command answered", GROUP_DEADLINE, |m| {
            (0..N).all(|i| !replies_for(m, &format!("req-bp-{i}")).is_empty())
        })
        .await;
    // One key, one partition, one at a time: answered in the order sent.
    let order: Vec<String> = seen.iter().map(key).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("req-bp-{i}")).collect();
    assert_eq!(order, expected);
    assert!(seen.iter().all(|m| value(m)["status"] == 201));
    let pauses = crate::common::metric(&t, "paycore_kafka_partition_pauses_total")
        .await
        .unwrap_or(0.0);
    assert!(
        pauses >= 1.0,
        "the partition was paused at its bound, not buffered: {pauses}"
    );
    t.stop().await;
}

/// A pay command applied, and the process gone before its reply was produced (simulated: the
/// operation runs with the command's key and nothing is sent), then the order moves on to
/// PAID. The redelivered command answers the original 202, byte for byte, with no second
/// effect: the reply was stored with the PAYING state it answers. Likewise a refund.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pay_applied_before_a_crash_answers_its_original_reply_when_redelivered() {
    use paycore::actors::CommandKey;
    use paycore::kafka::command::{Decoded, decode};
    let mock = mock_cluster();
    let servers = mock.bootstrap_servers();
    let t = spawn_app(|s| kafka_settings(s, &servers, false, true)).await;
    let gw = Gateway::new(&servers);
    let mut replies = Reader::open(&servers, REPLIES, 1);
    let merchant = paycore::http::auth::AuthedMerchant {
        id: paycore::domain::MerchantId::parse("demo").unwrap(),
        channels: vec!["sim".into()],
        fulfills: false,
    };
    let keyed = |v: &Value| match decode(&serde_json::to_vec(v).unwrap(), 1 << 20) {
        Decoded::Command(c) => (
            CommandKey {
                request_id: c.request_id.clone(),
                command_hash: c.hash.clone(),
            },
            c,
        ),
        _ => panic!("not a command: {v}"),
    };

    let created = t.create("KCRASH-1", 600).await;
    let id = created["order_id"].as_str().unwrap().to_string();
    let pay = json!({"request_id": "req-crash-pay", "merchant_id": "demo", "command": "pay",
                     "order_id": id, "pay_method": "native"});
    let (key, c) = keyed(&pay);
    // The first delivery: applied, its reply never produced.
    let first = t
        .app()
        .operations()
        .pay_for_command(&merchant, &id, &c.body, key)
        .await
        .expect("pay applied");
    assert_eq!(first.status.as_u16(), 202);
    t.wait_status(&id, "PAID").await;

    // Redelivered: the original answer, not `already_paid`.
    gw.send(&id, pay).await;
    let (reply, msg) = nth_reply(&mut replies, "req-crash-pay", 1).await;
    assert_eq!(reply["status"], 202, "{reply}");
    let original: Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(reply["body"], original);
    assert_eq!(header(&msg, "paycore-replayed").as_deref(), Some("true"));
    let stored = t
        .app()
        .command_store()
        .command_reply(&merchant.id, &c.request_id)
        .await
        .unwrap()
        .expect("stored with the effect");
    assert_eq!(stored.body, first.body, "byte for byte");
    let audit = t.sim_audit(&id).await;
    assert_eq!(
        (
            audit["payments"].as_array().map(Vec::len),
            audit["charges"].as_array().map(Vec::len)
        ),
        (Some(1), Some(1)),
        "one payment, charged once: {audit}"
    );

    // A refund applied before a crash, then the order changes again (a second refund).
    let refund = json!({"request_id": "req-crash-refund", "merchant_id": "demo",
                        "command": "refund", "order_id": id, "refund_no": "KCR-1", "amount": 100});
    let (key, c) = keyed(&refund);
    let first = t
        .app()
        .operations()
        .refund_for_command(&merchant, &id, &c.body, key)
        .await
        .expect("refund applied");
    assert_eq!(first.status.as_u16(), 202);
    let other = t
        .call(
            "POST",
            &format!("/v1/orders/{id}/refunds"),
            Some(json!({"refund_no": "KCR-2", "amount": 100})),
        )
        .await;
    assert_eq!(other.status, 202, "{:?}", other.body);
    gw.send(&id, refund).await;
    let (reply, _) = nth_reply(&mut replies, "req-crash-refund", 1).await;
    assert_eq!(reply["status"], 202, "{reply}");
    assert_eq!(
        reply["body"],
        serde_json::from_slice::<Value>(&first.body).unwrap()
    );
    let order = t.order(&id).await.body;
    assert_eq!(
        order["refunded_amount"], 200,
        "one refund per refund_no, none again: {order}"
    );
    t.stop().await;
}
