//! The command consumer: a consumer-group member on `stream.kafka.commands.topic` that runs
//! each message as its own task (`handler`), commits offsets in offset order per partition (the
//! lowest unfinished offset; `enable.auto.offset.store=false`, stored only once a command's
//! reply is acknowledged), stops taking messages while every command slot is taken (they wait
//! in librdkafka's fetch queue, bounded by `fetch_queue_kbytes`), pauses a partition when its
//! own commands in flight reach their bound or storage refuses one (and every partition when
//! the slots stay taken past `FULL_HOLD`) instead of buffering, and runs messages with the
//! same key one after the other. One `session` is one group membership; the
//! stream supervisor (`streams::consumer::supervise`, task `kafka-commands`) starts a new one
//! after a failure. At shutdown a session stops fetching, lets commands in flight finish
//! (within `drain_timeout_ms`), commits, and leaves the group.

use super::CommandDeps;
use super::handler::{Handler, Pressure, PressureTx};
use super::offsets::OffsetTracker;
use crate::config::KafkaSettings;
use crate::streams::kafka::{client_config, producer_config, with_properties};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{Id, JoinSet};

/// Pause after a consume error before asking again (errors repeat while a broker is down).
const ERROR_PAUSE: Duration = Duration::from_millis(200);
/// Longest the consumer waits for its revocation when it leaves the group.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the loop stops taking messages because every command slot is taken; past it every
/// partition is paused and the consumer is polled again (rebalances are served in the poll).
const FULL_HOLD: Duration = Duration::from_millis(500);
/// How long one wait for consumer events lasts while leaving.
const LEAVE_POLL: Duration = Duration::from_millis(100);

/// The consumer's configuration: the group, manual offset storing, auto-commit of what is
/// stored, reading only committed transactions, and the fetch queue's bound.
pub fn consumer_config(k: &KafkaSettings) -> ClientConfig {
    let c = &k.commands;
    let mut cfg = client_config(k, &format!("{}-commands", k.client_id));
    cfg.set("group.id", &c.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", c.commit_interval_ms.to_string())
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set(
            "queued.max.messages.kbytes",
            c.fetch_queue_kbytes.to_string(),
        );
    // A default an operator may change in `properties`: a new group starts at the beginning
    // (commands sent before paycore first ran are answered too).
    cfg.set("auto.offset.reset", "earliest");
    // librdkafka's statistics carry each partition's lag (`paycore_kafka_consumer_lag_messages`).
    cfg.set("statistics.interval.ms", STATS_INTERVAL_MS.to_string());
    with_properties(cfg, k)
}

/// How often librdkafka reports its statistics (the consumer lag among them).
const STATS_INTERVAL_MS: u64 = 5_000;

/// A rebalance, as the consumer loop learns of it.
enum Note {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Records rebalances (librdkafka calls these from inside `recv`, on the loop's own task).
struct Ctx {
    topic: String,
    notes: Mutex<Vec<Note>>,
    /// Messages of the command topic not consumed yet, over the partitions assigned here.
    lag: prometheus::IntGauge,
}

impl Ctx {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect()
    }

    fn push(&self, n: Note) {
        if let Ok(mut notes) = self.notes.lock() {
            notes.push(n);
        }
    }

    fn take(&self) -> Vec<Note> {
        self.notes
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }
}

impl ClientContext for Ctx {
    fn stats(&self, stats: rdkafka::Statistics) {
        // A partition whose lag is not known yet reports -1; the unassigned partition -1.
        let lag: i64 = stats
            .topics
            .get(&self.topic)
            .map(|t| {
                t.partitions
                    .values()
                    .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                    .map(|p| p.consumer_lag)
                    .sum()
            })
            .unwrap_or(0);
        self.lag.set(lag);
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.push(Note::Revoked(self.partitions(tpl)));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.push(Note::Assigned(self.partitions(tpl)));
        }
    }
}

type Kafka = StreamConsumer<Ctx>;

/// One assigned partition.
struct Part {
    /// Which assignment this is: tasks of an earlier one no longer count here.
    epoch: u64,
    offsets: OffsetTracker,
    /// Commands of it waiting out saturated storage.
    overloaded: usize,
    paused: bool,
}

/// A task's place.
struct Meta {
    partition: i32,
    offset: i64,
    epoch: u64,
    key: Option<Vec<u8>>,
}

/// The last task of a key: its (partition, offset), and the signal that it ended.
type ChainLink = ((i32, i64), oneshot::Receiver<()>);

struct Session {
    consumer: Arc<Kafka>,
    ctx_topic: String,
    handler: Arc<Handler>,
    parts: HashMap<i32, Part>,
    epoch: u64,
    tasks: JoinSet<()>,
    meta: HashMap<Id, Meta>,
    /// Per message key, the last task started and the signal that it ended.
    chains: HashMap<Vec<u8>, ChainLink>,
    pressure_tx: mpsc::Sender<Pressure>,
    per_partition: usize,
    total: usize,
    deps_metrics: Arc<crate::metrics::Metrics>,
}

impl Session {
    fn apply_notes(&mut self, notes: Vec<Note>) {
        for n in notes {
            match n {
                Note::Revoked(ps) => {
                    for p in ps {
                        // Its tasks finish, but their offsets are no longer ours to store.
                        self.parts.remove(&p);
                    }
                }
                Note::Assigned(ps) => {
                    self.epoch += 1;
                    for p in ps {
                        self.parts.insert(
                            p,
                            Part {
                                epoch: self.epoch,
                                offsets: OffsetTracker::default(),
                                overloaded: 0,
                                paused: false,
                            },
                        );
                    }
                    tracing::info!(partitions = self.parts.len(), "command partitions assigned");
                }
            }
        }
    }

    /// Whether every command slot is taken: the loop stops taking messages (they wait in the
    /// consumer's bounded fetch queue) until one finishes.
    fn full(&self) -> bool {
        self.tasks.len() >= self.total
    }

    /// Pauses what is at a bound, resumes what is well below every bound. A partition at its
    /// own bound resumes once half of its commands finished, so that it is not paused again
    /// by the next message (each resume costs a new fetch). Every partition is paused when
    /// the loop was full for longer than `FULL_HOLD` (commands stalled on storage): from then
    /// on it polls again, so that rebalances are served while nothing is taken.
    fn apply_pauses(&mut self, held_too_long: bool) {
        let topic = self.ctx_topic.clone();
        for (p, part) in self.parts.iter_mut() {
            let own = if part.paused {
                part.offsets.len() > self.per_partition / 2
            } else {
                part.offsets.len() >= self.per_partition
            };
            let want = held_too_long || part.overloaded > 0 || own;
            if want == part.paused {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, *p);
            let r = if want {
                self.consumer.pause(&tpl)
            } else {
                self.consumer.resume(&tpl)
            };
            match r {
                Ok(()) => {
                    part.paused = want;
                    if want {
                        self.deps_metrics.kafka.pauses.inc();
                    }
                }
                Err(e) => tracing::warn!(error = %e, partition = p, "pause/resume failed"),
            }
        }
        let paused = self.parts.values().filter(|p| p.paused).count();
        let m = &self.deps_metrics.kafka;
        m.paused_partitions.set(paused as i64);
        m.in_flight.set(self.tasks.len() as i64);
    }

    fn dispatch(&mut self, m: OwnedMessage) {
        let (partition, offset) = (m.partition(), m.offset());
        let epoch = match self.parts.get_mut(&partition) {
            Some(part) => {
                part.offsets.start(offset);
                part.epoch
            }
            // A message of a partition we no longer hold: run it (it is fetched), but its
            // offset is the next owner's to commit.
            None => 0,
        };
        let key = m.key().map(<[u8]>::to_vec);
        let (done, ended) = oneshot::channel::<()>();
        let before = key.as_ref().and_then(|k| {
            self.chains
                .insert(k.clone(), ((partition, offset), ended))
                .map(|(_, r)| r)
        });
        let handler = self.handler.clone();
        let pressure = PressureTx {
            tx: self.pressure_tx.clone(),
            partition,
            epoch,
        };
        let id = self
            .tasks
            .spawn(async move {
                if let Some(before) = before {
                    // Ended or dropped: either way the earlier command of this key is over.
                    let _ = before.await;
                }
                handler.handle(&m, &pressure).await;
                drop(done);
            })
            .id();
        self.meta.insert(
            id,
            Meta {
                partition,
                offset,
                epoch,
                key,
            },
        );
    }

    /// A task ended: its offset is done; store the new commit point.
    fn finished(&mut self, id: Id) {
        let Some(meta) = self.meta.remove(&id) else {
            return;
        };
        if let Some(k) = &meta.key
            && self
                .chains
                .get(k)
                .is_some_and(|(at, _)| *at == (meta.partition, meta.offset))
        {
            self.chains.remove(k);
        }
        let Some(part) = self.parts.get_mut(&meta.partition) else {
            return;
        };
        if part.epoch != meta.epoch {
            return;
        }
        if let Some(commit) = part.offsets.finish(meta.offset) {
            let mut tpl = TopicPartitionList::new();
            let stored = tpl
                .add_partition_offset(&self.ctx_topic, meta.partition, Offset::Offset(commit))
                .and_then(|()| self.consumer.store_offsets(&tpl));
            if let Err(e) = stored {
                tracing::warn!(error = %e, partition = meta.partition, "offset not stored; the command will be redelivered");
            }
        }
    }

    fn pressure(&mut self, p: Pressure) {
        if let Some(part) = self.parts.get_mut(&p.partition)
            && part.epoch == p.epoch
        {
            if p.on {
                part.overloaded += 1;
            } else {
                part.overloaded = part.overloaded.saturating_sub(1);
            }
        }
    }

    /// The offsets handed out for commit, per partition still held.
    fn commit_list(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (p, part) in &self.parts {
            if let Some(c) = part.offsets.committed() {
                let _ = tpl.add_partition_offset(&self.ctx_topic, *p, Offset::Offset(c));
            }
        }
        tpl
    }
}

/// One consumer-group membership, from subscribe to leaving the group.
pub(super) async fn session(
    deps: CommandDeps,
    k: KafkaSettings,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let k = &k;
    let c = &k.commands;
    let ctx = Ctx {
        topic: c.topic.clone(),
        notes: Mutex::new(Vec::new()),
        lag: deps.metrics.kafka.consumer_lag.clone(),
    };
    let consumer: Arc<Kafka> = Arc::new(
        consumer_config(k)
            .create_with_context(ctx)
            .map_err(|e| format!("create consumer: {e}"))?,
    );
    consumer
        .subscribe(&[&c.topic])
        .map_err(|e| format!("subscribe to {}: {e}", c.topic))?;
    let producer = producer_config(k, &format!("{}-replies", k.client_id))
        .create()
        .map_err(|e| format!("create reply producer: {e}"))?;
    let handler = Arc::new(Handler {
        operations: deps.operations.clone(),
        auth: deps.auth.clone(),
        replies: deps.replies.clone(),
        producer,
        replies_topic: c.replies_topic.clone(),
        dlq_topic: c.dlq_topic.clone(),
        max_bytes: c.max_message_bytes,
        overload_retry: Duration::from_millis(c.overload_retry_ms),
        metrics: deps.metrics.clone(),
    });
    // Each task sends at most two signals (on, off) at a time: this never fills.
    let (pressure_tx, mut pressure_rx) = mpsc::channel(c.max_in_flight.saturating_mul(2).max(1));
    let mut s = Session {
        consumer: consumer.clone(),
        ctx_topic: c.topic.clone(),
        handler,
        parts: HashMap::new(),
        epoch: 0,
        tasks: JoinSet::new(),
        meta: HashMap::new(),
        chains: HashMap::new(),
        pressure_tx,
        per_partition: c.max_in_flight_per_partition,
        total: c.max_in_flight,
        deps_metrics: deps.metrics.clone(),
    };
    let mut failure = None;
    // Since when every slot has been taken (messages are not taken meanwhile).
    let mut full_since: Option<tokio::time::Instant> = None;
    loop {
        s.apply_notes(consumer.context().take());
        let now = tokio::time::Instant::now();
        full_since = if s.full() {
            Some(full_since.unwrap_or(now))
        } else {
            None
        };
        let held_too_long = full_since.is_some_and(|t| now.duration_since(t) >= FULL_HOLD);
        s.apply_pauses(held_too_long);
        if *shutdown.borrow() {
            break;
        }
        // Full and not yet paused: wait for a slot, or for the hold to run out.
        let hold = full_since.filter(|_| !held_too_long);
        tokio::select! {
            biased;
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep_until(hold.map_or(now, |t| t + FULL_HOLD)), if hold.is_some() => {}
            Some(p) = pressure_rx.recv() => s.pressure(p),
            Some(joined) = s.tasks.join_next_with_id(), if !s.tasks.is_empty() => match joined {
                Ok((id, ())) => s.finished(id),
                Err(e) => {
                    // A command task panicked: its offset can never be committed, so this
                    // session ends (the others finish first) and a new one redelivers it.
                    failure = Some(format!("command task failed: {e}"));
                    break;
                }
            },
            m = consumer.recv(), if hold.is_none() => match m {
                Ok(m) => {
                    let m = m.detach();
                    s.apply_notes(consumer.context().take());
                    s.dispatch(m);
                }
                Err(e) => {
                    if let Some((code, why)) = consumer.client().fatal_error() {
                        failure = Some(format!("fatal consumer error {code}: {why}"));
                        break;
                    }
                    tracing::warn!(error = %e, "command consume error");
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            },
        }
    }
    // Stop fetching (nothing more is dispatched), let what is in flight finish, commit.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(c.drain_timeout_ms);
    while !s.tasks.is_empty() {
        tokio::select! {
            Some(p) = pressure_rx.recv() => s.pressure(p),
            Some(joined) = s.tasks.join_next_with_id() => match joined {
                Ok((id, ())) => s.finished(id),
                Err(e) => tracing::error!(error = %e, "command task failed"),
            },
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(left = s.tasks.len(), "commands still in flight at the drain timeout; they will be redelivered");
                deps.metrics
                    .kafka
                    .commands
                    .with_label_values(&["unknown", "abandoned"])
                    .inc_by(s.tasks.len() as u64);
                s.tasks.abort_all();
                break;
            }
        }
    }
    deps.metrics.kafka.in_flight.set(0);
    deps.metrics.kafka.paused_partitions.set(0);
    let tpl = s.commit_list();
    drop(s);
    // Committing blocks: off the async threads.
    let committer = consumer.clone();
    let committed = tokio::task::spawn_blocking(move || {
        if tpl.count() > 0
            && let Err(e) = committer.commit(&tpl, CommitMode::Sync)
        {
            tracing::warn!(error = %e, "final offset commit failed; the last commands will be redelivered");
        }
    })
    .await;
    if let Err(e) = committed {
        tracing::warn!(error = %e, "final offset commit failed");
    }
    // Leave the group while still serving the consumer's events, so the revocation is
    // answered and the group rebalances at once, not after the session timeout.
    consumer.unsubscribe();
    let leave_by = tokio::time::Instant::now() + LEAVE_TIMEOUT;
    while tokio::time::Instant::now() < leave_by {
        if consumer
            .context()
            .take()
            .iter()
            .any(|n| matches!(n, Note::Revoked(_)))
        {
            break;
        }
        let _ = tokio::time::timeout(LEAVE_POLL, consumer.recv()).await;
    }
    let left = tokio::task::spawn_blocking(move || drop(consumer)).await;
    if let Err(e) = left {
        tracing::warn!(error = %e, "leaving the consumer group failed");
    }
    match failure {
        None => Ok(()),
        Some(f) => Err(f),
    }
}
