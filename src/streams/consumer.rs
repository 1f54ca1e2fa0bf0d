//! Consumers of the event log. The log is the outbox: events committed with the order changes
//! that caused them, each at a [`Position`]. Every consumer has its own named durable cursor in
//! storage, registered before it first reads, and the purge removes no event a registered
//! cursor has not passed. A consumer reads at least once: after a crash or a restart it reads
//! again from its cursor, so what it does with an event must be idempotent (by event id).
//!
//! Two ways to consume:
//! - [`run`]: a loop owned by paycore (the notifier, the ledger, the Kafka relay) around a
//!   [`Consume`] implementation, which moves the cursor itself, in the same transaction as its
//!   effect where it has one. [`supervise`] restarts it when it panics or fails, and records
//!   its state in [`Health`] for `/readyz`.
//! - [`LogConsumer`]: a handle for code embedding paycore (an external subscriber in-process),
//!   which polls, handles and commits at its own pace.

use crate::metrics::Metrics;
pub use crate::storage::Position;
use crate::storage::{OrderStore, StoreError, StoredEvent};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The one partition of the embedded log (a node's outbox); Kafka's partitions are its own.
pub const EMBEDDED_PARTITION: u32 = 0;
/// Backstop poll when no commit wakes a consumer.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Pause after a failed batch before reading again from the cursor.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// First pause before a failed consumer is started again; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A consumer that ran this long before failing starts again after [`FIRST_BACKOFF`].
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Longest consumer name.
const MAX_NAME: usize = 64;

/// Checks a consumer name: 1 to 64 of `a-z`, `0-9`, `.`, `_`, `-`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "consumer name {name:?} must be 1 to {MAX_NAME} characters of a-z, 0-9, '.', '_', '-'"
        ))
    }
}

/// What a paycore-owned consumer does with a batch.
#[async_trait]
pub trait Consume: Send + Sync + 'static {
    /// Takes in `events` (log order, all of `partition` and after the cursor there) and moves
    /// the consumer's cursor in `partition` to `through`, atomically with its effect when it
    /// has one. `Err` leaves the cursor where it was; the batch is read again after a pause.
    async fn take(
        &self,
        partition: u32,
        events: Vec<StoredEvent>,
        through: u64,
    ) -> Result<(), String>;
}

/// A consumer loop's settings.
#[derive(Clone)]
pub struct RunSpec {
    /// Its cursor's name.
    pub name: String,
    /// The log partition this loop reads (a consumer runs one loop per partition).
    pub partition: u32,
    /// The log.
    pub store: Arc<dyn OrderStore>,
    /// Changes after commits that stored events.
    pub commits: watch::Receiver<u64>,
    /// Most events per batch.
    pub batch: usize,
    /// After a commit wakes it, how long the loop waits before reading: one batch then takes in
    /// every commit of that time, so the consumer's own writes do not follow each commit.
    pub linger: Duration,
}

/// Runs a consumer from its durable cursor until `shutdown` turns true; then it takes in what
/// is committed and returns `Ok`. Storage failures are retried here; `Err` only when the cursor
/// cannot be read at start.
pub async fn run<C: Consume + ?Sized>(
    spec: RunSpec,
    consumer: &C,
    health: &Health,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let RunSpec {
        name,
        partition,
        store,
        mut commits,
        batch,
        linger,
    } = spec;
    let task = task_name(&name, partition, store.log_partitions());
    let mut cursor = store
        .cursor(&name, partition)
        .await
        .map_err(|e| e.to_string())?;
    health.progress(&task, cursor);
    loop {
        let stopping = *shutdown.borrow();
        // Seen before reading: a commit after this point changes it again and wakes us.
        commits.borrow_and_update();
        let read = match store.events_after(partition, cursor, batch).await {
            Ok(events) => match events.last().map(|e| e.seq) {
                None => Ok(0),
                Some(through) => {
                    let n = events.len();
                    consumer.take(partition, events, through).await.map(|()| {
                        cursor = through;
                        health.progress(&task, cursor);
                        n
                    })
                }
            },
            Err(e) => Err(e.to_string()),
        };
        match read {
            Ok(n) if n == batch => continue,
            Ok(_) if stopping => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(consumer = %name, partition, cursor, error = %e, "consumer batch failed; reading again from its cursor");
                health.failed_batch(&task, &e);
                if stopping {
                    return Ok(());
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        }
        tokio::select! {
            changed = commits.changed() => {
                if changed.is_err() {
                    // The store is gone; the backstop keeps the loop from spinning.
                    tokio::time::sleep(IDLE_POLL).await;
                } else if !linger.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(linger) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
            _ = tokio::time::sleep(IDLE_POLL) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Runs `consumer` over every partition of the log, one supervised loop per partition, each
/// from its own cursor (`spec.partition` is ignored).
pub fn spawn_partitions<C: Consume>(
    spec: RunSpec,
    consumer: Arc<C>,
    health: &Health,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let partitions = spec.store.log_partitions();
    (0..partitions)
        .map(|partition| {
            let spec = RunSpec {
                partition,
                ..spec.clone()
            };
            let task = task_name(&spec.name, partition, partitions);
            let (h, stop, consumer) = (health.clone(), shutdown.clone(), consumer.clone());
            supervise(
                &task,
                health.clone(),
                metrics.clone(),
                shutdown.clone(),
                move || {
                    let (spec, consumer, h, stop) =
                        (spec.clone(), consumer.clone(), h.clone(), stop.clone());
                    async move { run(spec, consumer.as_ref(), &h, stop).await }
                },
            )
        })
        .collect()
}

/// The name a consumer's loop over one partition goes by in `/readyz` and the logs: the
/// consumer's name when the log has one partition, `name@partition` otherwise.
pub fn task_name(name: &str, partition: u32, partitions: u32) -> String {
    if partitions <= 1 {
        name.to_string()
    } else {
        format!("{name}@{partition}")
    }
}

/// A supervised task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Running.
    Running,
    /// Failed; waiting to be started again.
    Restarting,
    /// Stopped for shutdown.
    Stopped,
}

/// What `/readyz` knows of one supervised task.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskStatus {
    /// Its state.
    pub state: TaskState,
    /// Times it was started again after a failure.
    pub restarts: u64,
    /// Its cursor as it last reported it (log consumers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
    /// Batches that failed since the last one that succeeded.
    pub failing_batches: u64,
}

/// The supervised tasks' states, shared with `/readyz`.
#[derive(Clone, Default)]
pub struct Health {
    tasks: Arc<Mutex<BTreeMap<String, TaskStatus>>>,
}

impl Health {
    /// A snapshot, by name.
    pub fn snapshot(&self) -> BTreeMap<String, TaskStatus> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TaskStatus>> {
        // A panic while holding this lock leaves plain data behind: keep using it.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, name: &str, f: impl FnOnce(&mut TaskStatus)) {
        let mut tasks = self.lock();
        let status = tasks.entry(name.to_string()).or_insert(TaskStatus {
            state: TaskState::Running,
            restarts: 0,
            cursor: None,
            failing_batches: 0,
        });
        f(status);
    }

    fn progress(&self, name: &str, cursor: u64) {
        self.set(name, |s| {
            s.cursor = Some(cursor);
            s.failing_batches = 0;
        });
    }

    fn failed_batch(&self, name: &str, _error: &str) {
        self.set(name, |s| {
            s.failing_batches = s.failing_batches.saturating_add(1)
        });
    }
}

/// Runs `start()` as a task named `name`, and starts it again (after a back-off of 100 ms
/// doubling to 30 s) whenever it panics, fails, or ends while `shutdown` is still false. Ends
/// when a run ends after shutdown was asked for.
pub fn supervise<F, Fut>(
    name: &str,
    health: Health,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    mut start: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let name = name.to_string();
    // The series exists from the start: an alert on its increase sees the first restart.
    metrics
        .stream_task_restarts
        .with_label_values(&[name.as_str()]);
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            health.set(&name, |s| s.state = TaskState::Running);
            let started = Instant::now();
            let outcome = tokio::spawn(start()).await;
            let stopping = *shutdown.borrow();
            let why = match outcome {
                Ok(Ok(())) if stopping => {
                    health.set(&name, |s| s.state = TaskState::Stopped);
                    return;
                }
                Ok(Ok(())) => "ended while paycore runs".to_string(),
                Ok(Err(e)) => e,
                Err(e) if e.is_panic() => "panicked".to_string(),
                Err(e) => e.to_string(),
            };
            if stopping {
                health.set(&name, |s| s.state = TaskState::Stopped);
                return;
            }
            if started.elapsed() >= STABLE_AFTER {
                backoff = FIRST_BACKOFF;
            }
            tracing::error!(task = %name, error = %why, pause_ms = backoff.as_millis() as u64, "supervised task failed; starting it again");
            health.set(&name, |s| {
                s.state = TaskState::Restarting;
                s.restarts = s.restarts.saturating_add(1);
            });
            metrics
                .stream_task_restarts
                .with_label_values(&[name.as_str()])
                .inc();
            let mut shutdown = shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.wait_for(|s| *s) => {
                    health.set(&name, |s| s.state = TaskState::Stopped);
                    return;
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}

/// A durable named consumer for code that embeds paycore: it polls batches after its cursors
/// (one per log partition), handles them, and commits what it handled. What it has not
/// committed is read again by the next `LogConsumer` opened under the same name (after a crash,
/// a restart, or [`rewind`]).
///
/// [`rewind`]: LogConsumer::rewind
pub struct LogConsumer {
    name: String,
    store: Arc<dyn OrderStore>,
    commits: watch::Receiver<u64>,
    /// By partition.
    committed: Vec<u64>,
    /// By partition.
    read: Vec<u64>,
    /// The partition the next poll looks at first (partitions take turns).
    next: usize,
}

impl LogConsumer {
    /// Opens the consumer `name`, registering its cursors if it is new (a new consumer starts at
    /// the end of the log: it sees what is committed from now on).
    pub async fn open(
        store: Arc<dyn OrderStore>,
        commits: watch::Receiver<u64>,
        name: &str,
    ) -> Result<Self, StoreError> {
        validate_name(name).map_err(StoreError::Backend)?;
        let committed = store.register_cursor(name).await?;
        Ok(Self {
            name: name.to_string(),
            store,
            commits,
            read: committed.clone(),
            committed,
            next: 0,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The positions up to which it has committed, by partition.
    pub fn committed(&self) -> &[u64] {
        &self.committed
    }

    /// Up to `max` events of one partition after what it read there so far (partitions take
    /// turns); waits up to `wait` for a commit when there are none (then answers an empty
    /// batch).
    pub async fn poll(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let partitions = self.read.len();
        loop {
            self.commits.borrow_and_update();
            for k in 0..partitions {
                let p = (self.next + k) % partitions;
                let events = self
                    .store
                    .events_after(p as u32, self.read[p], max.max(1))
                    .await?;
                if let Some(last) = events.last() {
                    self.read[p] = last.seq;
                    self.next = (p + 1) % partitions;
                    return Ok(events);
                }
            }
            tokio::select! {
                changed = self.commits.changed() => {
                    if changed.is_err() {
                        return Ok(Vec::new());
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }

    /// Durably records that everything of `at.partition` up to and including `at.seq` is
    /// handled. A position beyond what was polled is refused: committing unseen events would
    /// lose them.
    pub async fn commit(&mut self, at: Position) -> Result<(), StoreError> {
        let p = at.partition as usize;
        let Some(&read) = self.read.get(p) else {
            return Err(StoreError::Backend(format!(
                "consumer {} cannot commit {at}: the log has {} partitions",
                self.name,
                self.read.len()
            )));
        };
        if at.seq > read {
            return Err(StoreError::Backend(format!(
                "consumer {} cannot commit {at}: it has read up to {read} there",
                self.name
            )));
        }
        if at.seq > self.committed[p] {
            self.store
                .set_cursor(&self.name, at.partition, at.seq)
                .await?;
            self.committed[p] = at.seq;
        }
        Ok(())
    }

    /// Forgets what was polled but not committed: the next poll reads it again.
    pub fn rewind(&mut self) {
        self.read = self.committed.clone();
    }

    /// Removes the consumer's cursor, so it no longer holds the purge.
    pub async fn unregister(self) -> Result<(), StoreError> {
        self.store.drop_cursor(&self.name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_checked() {
        assert!(validate_name("ledger").is_ok());
        assert!(validate_name("billing-export.v2_a").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("Ledger").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
        assert!(validate_name(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn positions_order_and_print() {
        let a = Position {
            partition: 0,
            seq: 9,
        };
        let b = Position {
            partition: 0,
            seq: 10,
        };
        assert!(a < b);
        assert_eq!(b.to_string(), "0:10");
    }

    #[tokio::test]
    async fn a_supervised_task_is_started_again_after_a_panic_and_stops_on_shutdown() {
        let health = Health::default();
        let metrics = Arc::new(Metrics::new());
        let (stop, stop_rx) = watch::channel(false);
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let r = runs.clone();
        let watch_stop = stop_rx.clone();
        let task = supervise(
            "flaky",
            health.clone(),
            metrics.clone(),
            stop_rx,
            move || {
                let n = r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut rx = watch_stop.clone();
                async move {
                    if n < 2 {
                        panic!("run {n} fails");
                    }
                    let _ = rx.wait_for(|s| *s).await;
                    Ok(())
                }
            },
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while runs.load(std::sync::atomic::Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "restarted twice in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let s = health.snapshot()["flaky"].clone();
        assert_eq!(s.state, TaskState::Running);
        assert_eq!(s.restarts, 2);
        assert_eq!(
            metrics
                .stream_task_restarts
                .with_label_values(&["flaky"])
                .get(),
            2
        );
        stop.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(health.snapshot()["flaky"].state, TaskState::Stopped);
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
