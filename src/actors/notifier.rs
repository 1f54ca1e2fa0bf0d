//! The notifier: signed merchant notifications with durable retries and dead letters. Two
//! loops, both holding nothing that storage does not hold:
//!
//! - **the outbox consumer** reads committed events after its own durable cursor (`notifier`),
//!   turns each whose type the order's merchant subscribes to, and that has a URL, into a
//!   notification row, and stores the rows and the new cursor in one transaction: a crash
//!   before that write reads the events again (ids are derived, so nothing is stored twice),
//!   after it never. Woken by the writer after commits that stored events, with a backstop.
//! - **the delivery loop** mirrors the timer scheduler: every `tick_ms` (and when new rows or a
//!   finished delivery wake it) it claims a page of due notifications, leased in the same write,
//!   never more than the free delivery slots, leaving out merchants at their own bound, and runs
//!   each attempt as its own task. Under a backlog the rest wait in storage, not in memory; an
//!   attempt lost in a crash is due again when its lease runs out. One order's notifications
//!   go out in version order: storage never hands out one while an earlier one is PENDING.
//!
//! No ractor actor: neither loop has a mailbox anyone sends to; like the scheduler they are
//! tasks stopped by the one shutdown signal, after the order actors drained (their last events
//! are consumed first) and before storage closes.

use super::notifier_delivery::Deliverer;
use crate::config::live::Live;
use crate::config::{MerchantSettings, NotificationSettings};
use crate::domain::notification::{self, Notification, Subscription};
use crate::metrics::Metrics;
use crate::storage::{MerchantRoom, NotificationStore, OrderStore, StoredEvent};
use crate::streams::consumer::{self, Consume, Health, RunSpec, supervise};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// Name of the notifier's outbox cursor in storage.
pub const CURSOR: &str = "notifier";
/// Pause after a storage failure before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How often `paycore_notifications_pending` is counted.
const STATS_EVERY: Duration = Duration::from_secs(5);

/// A merchant as the notifier needs it.
struct Merchant {
    secret: Vec<u8>,
    subscription: Subscription,
    /// Its deliveries in flight (`max_in_flight_per_merchant`).
    slots: Arc<Semaphore>,
}

/// The merchants as the notifier knows them: secrets, subscriptions and delivery slots. A
/// reload replaces them whole; a merchant configured before and after keeps its slots, so its
/// deliveries in flight still count against its bound.
pub struct NotifierMerchants {
    live: Live<HashMap<String, Merchant>>,
    per_merchant: usize,
}

/// Merchants built by `NotifierMerchants::prepare` for `install`.
pub struct PreparedMerchants(HashMap<String, Merchant>);

impl NotifierMerchants {
    /// The merchants of `merchants`, each with `per_merchant` delivery slots.
    pub fn new(merchants: &[MerchantSettings], per_merchant: usize) -> Self {
        let this = Self {
            live: Live::new(HashMap::new()),
            per_merchant,
        };
        this.install(this.prepare(merchants));
        this
    }

    /// Builds `merchants` without changing anything.
    pub fn prepare(&self, merchants: &[MerchantSettings]) -> PreparedMerchants {
        let current = self.live.get();
        PreparedMerchants(
            merchants
                .iter()
                .map(|m| {
                    let slots = current.get(&m.id).map_or_else(
                        || Arc::new(Semaphore::new(self.per_merchant)),
                        |c| c.slots.clone(),
                    );
                    let merchant = Merchant {
                        secret: m.secret.expose().as_bytes().to_vec(),
                        subscription: m.subscription(),
                        slots,
                    };
                    (m.id.clone(), merchant)
                })
                .collect(),
        )
    }

    /// Makes `prepared` the merchants notified from now on.
    pub fn install(&self, prepared: PreparedMerchants) {
        self.live.set(prepared.0);
    }

    fn get(&self) -> Arc<HashMap<String, Merchant>> {
        self.live.get()
    }
}

/// What the notifier needs.
pub struct NotifierDeps {
    /// The outbox.
    pub events: Arc<dyn OrderStore>,
    /// Notification rows and the cursor.
    pub store: Arc<dyn NotificationStore>,
    /// Settings.
    pub settings: NotificationSettings,
    /// Merchants: secrets, subscriptions and delivery slots.
    pub merchants: Arc<NotifierMerchants>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Changes after commits that stored events.
    pub commits: watch::Receiver<u64>,
    /// Wakes the delivery loop (new rows, a finished delivery, a redelivery).
    pub wake: Arc<Notify>,
    /// Wait after a commit before reading the outbox (`stream.consumer_linger_ms`).
    pub linger: std::time::Duration,
}

/// Starts the consumer (from its cursor, which must be registered) and the delivery loop, each
/// supervised: started again after a failure, and stopped once `shutdown` turns true (the
/// consumer after taking in what is committed, the delivery loop after its attempts in flight
/// end).
pub fn spawn(
    deps: NotifierDeps,
    health: Health,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let s = &deps.settings;
    let deliverer = Deliverer::new(
        s.address_policy(),
        Duration::from_millis(s.request_timeout_ms),
        s.max_in_flight_per_merchant,
    )?;
    let merchants = deps.merchants.clone();
    let consumer = Arc::new(Consumer {
        store: deps.store.clone(),
        merchants: merchants.clone(),
        wake: deps.wake.clone(),
    });
    let spec = RunSpec {
        name: CURSOR.to_string(),
        partition: 0,
        store: deps.events,
        commits: deps.commits,
        batch: s.batch,
        linger: deps.linger,
    };
    let deliveries = Arc::new(Deliveries {
        store: deps.store,
        deliverer: Arc::new(deliverer),
        merchants,
        slots: Arc::new(Semaphore::new(s.max_in_flight)),
        schedule: Arc::new(s.schedule()),
        settings: s.clone(),
        metrics: deps.metrics.clone(),
        wake: deps.wake,
    });
    let mut tasks = consumer::spawn_partitions(
        spec,
        consumer,
        &health,
        deps.metrics.clone(),
        shutdown.clone(),
    );
    let stop = shutdown.clone();
    let delivery_task = supervise(
        "notifier-delivery",
        health,
        deps.metrics,
        shutdown,
        move || {
            let (deliveries, stop) = (deliveries.clone(), stop.clone());
            async move {
                deliveries.run(stop).await;
                Ok(())
            }
        },
    );
    tasks.push(delivery_task);
    Ok(tasks)
}

/// The outbox consumer.
struct Consumer {
    store: Arc<dyn NotificationStore>,
    merchants: Arc<NotifierMerchants>,
    wake: Arc<Notify>,
}

#[async_trait::async_trait]
impl Consume for Consumer {
    /// Turns a batch of events into notification rows, stored with the cursor in one write.
    async fn take(
        &self,
        partition: u32,
        events: Vec<StoredEvent>,
        through: u64,
    ) -> Result<(), String> {
        let now = OffsetDateTime::now_utc();
        let merchants = self.merchants.get();
        let rows: Vec<Notification> = events
            .iter()
            .filter_map(|e| {
                let merchant = merchants.get(&e.event.merchant_id)?;
                Notification::for_event(&e.event, &merchant.subscription, now)
            })
            .collect();
        let any = !rows.is_empty();
        self.store
            .enqueue_notifications(rows, CURSOR, partition, through)
            .await
            .map_err(|e| e.to_string())?;
        if any {
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// The delivery loop.
struct Deliveries {
    store: Arc<dyn NotificationStore>,
    deliverer: Arc<Deliverer>,
    merchants: Arc<NotifierMerchants>,
    /// Deliveries in flight overall (`max_in_flight`).
    slots: Arc<Semaphore>,
    schedule: Arc<Vec<Duration>>,
    settings: NotificationSettings,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
}

impl Deliveries {
    async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let tick = Duration::from_millis(self.settings.tick_ms);
        let mut last_stats: Option<Instant> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.claim_and_start().await;
            if last_stats.is_none_or(|t| t.elapsed() >= STATS_EVERY) {
                last_stats = Some(Instant::now());
                match self.store.pending_notifications().await {
                    Ok(n) => self.metrics.notifications_pending.set(n),
                    Err(e) => tracing::warn!(error = %e, "cannot count pending notifications"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        // Let attempts in flight end (each is bounded by request_timeout_ms) and be recorded.
        let all = u32::try_from(self.settings.max_in_flight).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(all).await;
    }

    /// Claims due notifications, a page at a time while full pages keep coming and slots are
    /// free, and starts an attempt for each.
    async fn claim_and_start(&self) {
        loop {
            let free = self.slots.available_permits();
            if free == 0 {
                return;
            }
            let (room, open) = self.room();
            let limit = free.min(self.settings.page_size).min(open);
            if limit == 0 {
                return;
            }
            let now = OffsetDateTime::now_utc();
            let lease = time::Duration::milliseconds(self.settings.lease_ms as i64);
            let page = match self
                .store
                .claim_due_notifications(now, now + lease, limit, &room)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read due notifications; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    return;
                }
            };
            let full = page.len() == limit;
            for n in page {
                self.start(n).await;
            }
            if !full {
                return;
            }
        }
    }

    /// What each merchant has in flight, and how many deliveries may start now: each
    /// configured merchant's room, plus one merchant's bound for notifications of merchants
    /// configured no more (each such attempt fails at once). A claim asks for no more than
    /// that, so that a merchant with little room does not make it read a page of rows it must
    /// pass over.
    fn room(&self) -> (MerchantRoom, usize) {
        let per_merchant = self.settings.max_in_flight_per_merchant;
        let merchants = self.merchants.get();
        let mut open = per_merchant;
        let mut in_flight = Vec::new();
        for (id, m) in merchants.iter() {
            let busy = per_merchant.saturating_sub(m.slots.available_permits());
            open = open.saturating_add(per_merchant - busy);
            if busy > 0
                && let Ok(id) = crate::domain::MerchantId::parse(id)
            {
                in_flight.push((id, busy));
            }
        }
        let room = MerchantRoom {
            per_merchant,
            in_flight,
        };
        (room, open)
    }

    /// Starts one attempt in its own task, holding a global slot until its outcome is stored
    /// and a merchant slot while its request lasts. The claim took no more than the free slots,
    /// so neither wait is long.
    async fn start(&self, n: Notification) {
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let merchants = self.merchants.get();
        let merchant = merchants.get(n.merchant_id.as_str());
        let merchant_slot: Option<OwnedSemaphorePermit> = match merchant {
            Some(m) => m.slots.clone().acquire_owned().await.ok(),
            None => None,
        };
        let secret = merchant.map(|m| m.secret.clone());
        let span = tracing::info_span!(
            "notification",
            order_id = %n.order_id,
            merchant_id = %n.merchant_id,
            notification_id = %n.notification_id,
            event_type = %n.event_type,
        );
        let (store, deliverer, schedule) = (
            self.store.clone(),
            self.deliverer.clone(),
            self.schedule.clone(),
        );
        let (metrics, wake) = (self.metrics.clone(), self.wake.clone());
        tokio::spawn(
            async move {
                let started = Instant::now();
                let result = match &secret {
                    Some(secret) => deliverer.attempt(&n, secret).await,
                    // Removed from the settings since: nothing can sign it.
                    None => notification::AttemptResult::NoAnswer(
                        "the merchant is not configured".into(),
                    ),
                };
                // The merchant's bound is on requests to it: this one has ended. Its outcome's
                // commit below holds only the global slot (the row stays leased until then, so
                // no claim hands it out again meanwhile), and the next claim may join that
                // commit.
                drop(merchant_slot);
                wake.notify_one();
                metrics
                    .notification_delivery_seconds
                    .observe(started.elapsed().as_secs_f64());
                let now = OffsetDateTime::now_utc();
                let outcome = notification::after_attempt(result, n.schedule_pos, &schedule, now);
                metrics
                    .notifications
                    .with_label_values(&[outcome.label()])
                    .inc();
                match &outcome {
                    notification::DeliveryOutcome::Dead { status, error } => {
                        tracing::warn!(?status, %error, attempts = n.attempts + 1, "notification is dead");
                    }
                    other => tracing::debug!(outcome = ?other, "notification attempt"),
                }
                if let Err(e) = store
                    .record_delivery(&n.notification_id, n.attempts, outcome, now)
                    .await
                {
                    tracing::warn!(error = %e, "attempt not recorded; its lease makes it due again");
                }
                drop(slot);
                wake.notify_one();
            }
            .instrument(span),
        );
    }
}
