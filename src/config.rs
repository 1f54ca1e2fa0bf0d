//! Settings, layered: built-in defaults, then `config.toml`, then `PAYCORE_*` environment
//! variables (`PAYCORE_SERVER__PORT=9090` sets `server.port`; `__` separates levels, a number
//! indexes a list: `PAYCORE_MERCHANTS__0__SECRET`). Unknown keys are refused; secrets never print.

pub mod exposure;
pub mod kafka;
pub mod live;
pub mod scylla;

pub use kafka::{KafkaCommandSettings, KafkaSettings};
use paycore_biller_sim::BillerSettings;
use paycore_channel_sim::SimSettings;
pub use scylla::ScyllaSettings;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "PAYCORE_";
/// Most delays in one schedule.
const MAX_SCHEDULE_LEN: usize = 64;

/// A secret string: deserializes from plain text, prints as `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret's bytes, for signing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// All of paycore's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// HTTP server.
    pub server: ServerSettings,
    /// Storage.
    pub storage: StorageSettings,
    /// Order actors.
    pub actors: ActorSettings,
    /// Merchant authentication.
    pub auth: AuthSettings,
    /// Orders and submit tokens.
    pub orders: OrderSettings,
    /// Event stream.
    pub stream: StreamSettings,
    /// Durable timers: the scheduler and the stuck-order sweep.
    pub timers: TimerSettings,
    /// Signed merchant notifications: retries, bounds, and the addresses they may go to.
    pub notifications: NotificationSettings,
    /// The double-entry ledger the outbox is booked into.
    pub ledger: LedgerSettings,
    /// The in-process channel simulator.
    pub simulator: SimulatorSettings,
    /// Payment channels by name.
    pub channels: BTreeMap<String, ChannelSettings>,
    /// Merchants.
    pub merchants: Vec<MerchantSettings>,
    /// The operator's endpoints.
    pub admin: AdminSettings,
}

/// Shortest admin token accepted.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// The operator's endpoints (`POST /admin/reload`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Bearer token of the admin endpoints; empty switches them off (they answer 404).
    pub token: Secret,
}

/// HTTP server settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on.
    pub bind: String,
    /// Port (0 picks a free one).
    pub port: u16,
    /// HTTP worker threads; 0: half the cores (at least one), see [`ServerSettings::http_workers`].
    pub workers: usize,
    /// Threads of the runtime the actors, the store's callers and the consumers run on; 0: the
    /// cores the HTTP workers leave (at least one).
    pub runtime_threads: usize,
    /// Largest request body.
    pub body_limit_bytes: usize,
    /// Most open connections per worker (each holds about 20 KiB of buffers); more wait in
    /// the listen backlog.
    pub max_connections: usize,
    /// Most requests being handled at once (operations routes aside); one more is answered 503
    /// `overloaded` at once, before its body is read. Bounds the memory of requests in flight,
    /// and so every mailbox.
    pub max_in_flight_requests: usize,
    /// Connections the kernel queues for accepting (the listen backlog; the kernel caps it at
    /// `net.core.somaxconn`). A connect beyond it is dropped and the client retries after ~1 s.
    pub backlog: u32,
    /// Time a client has to send its request head.
    pub client_request_timeout_ms: u64,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_timeout_secs: u64,
    /// The URL channels call back on; empty means `http://{bind}:{port}`.
    pub public_base_url: String,
}

/// Storage settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// Backend: `sqlite` (embedded, the default) or `scylla` (a ScyllaDB or Cassandra cluster).
    pub backend: String,
    /// SQLite backend.
    pub sqlite: SqliteSettings,
    /// CQL backend.
    pub scylla: ScyllaSettings,
    /// How often expired tokens and old delivered events are purged.
    pub purge_interval_secs: u64,
    /// How long delivered events stay in the outbox.
    pub event_retention_hours: u64,
}

/// When SQLite's WAL is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Every commit is fsynced: survives power loss.
    Full,
    /// Fsync at checkpoints: survives a process crash, not power loss.
    Normal,
}

impl Synchronous {
    /// The PRAGMA value.
    pub fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// SQLite backend settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteSettings {
    /// Database file.
    pub path: String,
    /// Durability level.
    pub synchronous: Synchronous,
    /// Most writes in one group commit.
    pub batch_max_writes: usize,
    /// Longest the writer waits for more writes before committing (0: commit what is queued).
    pub batch_max_wait_us: u64,
    /// Shortest time from the start of one group commit to the start of the next: writes that
    /// arrive sooner join the next commit. Each commit costs an fsync and wakes every stream
    /// consumer, so under load this trades a bounded wait for far fewer commits; a write that
    /// finds the writer idle longer than this commits at once. 0: commit as soon as the last
    /// commit is done.
    pub commit_interval_us: u64,
    /// The writer connection's page cache, KiB. The end of every commit truncates SQLite's
    /// page cache (`pcache1TruncateUnsafe`, which scans its hash table), so a larger cache
    /// costs every commit more (loadtest/ANALYSIS.md); the hot pages (the newest orders and
    /// events, the index roots) are far fewer than it holds, and a miss is a read from the
    /// OS page cache.
    pub writer_cache_kib: u64,
    /// WAL pages after which a commit checkpoints them into the database file (SQLite's
    /// `wal_autocheckpoint`). A page written by many commits in between is copied once, so a
    /// longer interval copies fewer pages per commit; the WAL file grows to about this many
    /// pages (times the page size) between checkpoints, and a restart replays at most that.
    pub wal_autocheckpoint_pages: u32,
    /// Writes waiting for the writer; beyond it callers wait up to `enqueue_timeout_ms`.
    pub queue_capacity: usize,
    /// How long a write may wait for queue room before it is refused as overloaded.
    pub enqueue_timeout_ms: u64,
    /// Read-only connections.
    pub readers: usize,
    /// SQLite busy timeout.
    pub busy_timeout_ms: u64,
}

/// Order actor settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActorSettings {
    /// Most live order actors; the least recently used is passivated beyond it.
    pub max_live_orders: usize,
    /// An order actor idle this long is passivated.
    pub idle_passivate_ms: u64,
    /// How often the registry looks for idle actors.
    pub sweep_interval_ms: u64,
    /// Longest an HTTP handler waits for an order actor's answer.
    pub call_timeout_ms: u64,
    /// Committed order states cached for reads and actor start-up (0 disables the cache).
    pub read_cache_orders: u64,
}

/// Merchant authentication settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Largest allowed distance between a request's timestamp and the clock.
    pub replay_window_secs: u64,
    /// Most nonces held at once for one merchant (each is kept while its timestamp is inside
    /// the window); when full, that merchant's requests are refused with 503 rather than a
    /// nonce forgotten. A merchant's guard never holds more than its rate limit lets it send
    /// in two windows, so a merchant within its rate never sees 503 unless this is lower.
    pub nonce_capacity_per_merchant: u64,
}

/// Order settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrderSettings {
    /// Life of a submit token.
    pub token_ttl_secs: u64,
    /// Life of an unpaid order when the create call names none (a merchant may override it).
    pub default_expire_seconds: i64,
    /// Shortest life a create may ask for (`expire_seconds`).
    pub min_expire_seconds: i64,
    /// Delays of the status queries of a paying order, by attempt (a merchant may override it).
    pub poll_schedule_ms: Vec<u64>,
    /// Delays of refund retries, by attempt; after the last, an open refund is given up.
    pub refund_retry_ms: Vec<u64>,
    /// Delays of expiry-close retries when the channel did not answer; the last repeats.
    pub expire_retry_ms: Vec<u64>,
    /// Delays of write-off retries after a failed fulfillment (the first attempt is made at
    /// once after PAID); after the last, fulfillment is given up and the order refunded.
    pub fulfillment_retry_ms: Vec<u64>,
}

impl OrderSettings {
    /// The schedule for a merchant's orders.
    pub fn schedule(&self, merchant: Option<&MerchantSettings>) -> crate::domain::Schedule {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&x| std::time::Duration::from_millis(x))
                .collect()
        };
        crate::domain::Schedule {
            poll: ms(merchant
                .and_then(|m| m.poll_schedule_ms.as_deref())
                .unwrap_or(&self.poll_schedule_ms)),
            refund_retry: ms(&self.refund_retry_ms),
            expire_retry: ms(&self.expire_retry_ms),
            fulfillment_retry: ms(&self.fulfillment_retry_ms),
        }
    }
}

/// Durable timer settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimerSettings {
    /// How often the scheduler looks for due timers.
    pub tick_ms: u64,
    /// Most timers taken from storage per read.
    pub page_size: usize,
    /// Most fired timers being handled at once; the rest wait in storage.
    pub max_in_flight: usize,
    /// A fired timer whose handling is lost (a crash) fires again after this.
    pub lease_ms: u64,
    /// How often the stuck-order sweep runs.
    pub sweep_interval_ms: u64,
    /// Orders the sweep scans per round.
    pub sweep_batch: usize,
    /// A timer this late counts as overdue (metric).
    pub overdue_after_ms: u64,
    /// How often pending and overdue timers are counted.
    pub stats_interval_ms: u64,
}

/// Merchant notification settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationSettings {
    /// Notify merchants at all.
    pub enabled: bool,
    /// Delay before retry n after a failed attempt; after the last, a notification is DEAD.
    pub retry_schedule_ms: Vec<u64>,
    /// Timeout of one delivery (connect, request and answer).
    pub request_timeout_ms: u64,
    /// Most deliveries in flight at once, over every merchant.
    pub max_in_flight: usize,
    /// Most deliveries in flight at once to one merchant: a slow merchant waits alone.
    pub max_in_flight_per_merchant: usize,
    /// How often due notifications are looked for.
    pub tick_ms: u64,
    /// Most notifications claimed from storage per read.
    pub page_size: usize,
    /// A claimed notification whose attempt is lost (a crash) is due again after this.
    pub lease_ms: u64,
    /// Events the notifier reads from the outbox per round.
    pub batch: usize,
    /// Notify URLs may point at this host (127.0.0.0/8, ::1, `localhost`).
    pub allow_loopback: bool,
    /// Notify URLs may point at private networks (10/8, 172.16/12, 192.168/16, 100.64/10,
    /// fc00::/7), link-local addresses (169.254/16, fe80::/10) and, with `allow_loopback`,
    /// the unspecified address.
    pub allow_private: bool,
}

impl NotificationSettings {
    /// The address rule notify URLs are checked against.
    pub fn address_policy(&self) -> crate::domain::AddressPolicy {
        crate::domain::AddressPolicy {
            allow_loopback: self.allow_loopback,
            allow_private: self.allow_private,
        }
    }

    /// The retry schedule.
    pub fn schedule(&self) -> Vec<std::time::Duration> {
        self.retry_schedule_ms
            .iter()
            .map(|&ms| std::time::Duration::from_millis(ms))
            .collect()
    }
}

/// Most events the ledger may book in one batch (one SQLite transaction).
pub const MAX_LEDGER_BATCH: usize = 10_000;

/// Ledger settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    /// Book the outbox into the ledger. Switched off, its cursor is dropped (it must not hold
    /// the outbox purge); switched on again, it books from the end of the outbox as it is then.
    pub enabled: bool,
    /// Most events booked per batch; each batch and the cursor commit in one transaction.
    pub batch: usize,
    /// How often `serve` reconciles the whole ledger (as `paycore ledger verify` does) and
    /// exports the result; 0 = never.
    pub verify_interval_secs: u64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            batch: 1_000,
            verify_interval_secs: 3_600,
        }
    }
}

/// Event stream settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// `in_process`: the outbox is the log, read by each consumer after its cursor; `kafka`:
    /// the relay also moves it to `kafka.events_topic`.
    pub kind: String,
    /// Events the relay moves from the outbox per read (with an external transport; with
    /// Kafka, the most messages one acknowledged publish carries).
    pub relay_batch: usize,
    /// A registered consumer whose cursor is further than this many events behind the log's
    /// head makes `/readyz` fail: it holds the purge, so the outbox grows while it lags.
    pub max_consumer_lag: u64,
    /// How long paycore's own consumers (the ledger, the notifier, the relay) wait after a
    /// commit wakes them before they read: one batch then takes in every commit of that time,
    /// instead of one batch (and one write) following each commit. It adds at most this much to
    /// the time from commit to booking, notification and topic.
    pub consumer_linger_ms: u64,
    /// The Kafka connection, topics and bounds (used with `kind = "kafka"` and by the command
    /// consumer).
    pub kafka: KafkaSettings,
}

/// The in-process simulator.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorSettings {
    /// Start the simulator inside `paycore serve`.
    pub in_process: bool,
    /// Its address.
    pub bind: String,
    /// Its port (0 picks a free one).
    pub port: u16,
    /// Its behaviour.
    pub behaviour: SimSettings,
    /// Port of the business-system simulator started beside it (0 picks a free one).
    pub biller_port: u16,
    /// The business-system simulator's behaviour.
    pub biller: BillerSettings,
}

impl fmt::Debug for SimulatorSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut behaviour = self.behaviour.clone();
        behaviour.secret = "***".into();
        f.debug_struct("SimulatorSettings")
            .field("in_process", &self.in_process)
            .field("bind", &self.bind)
            .field("port", &self.port)
            .field("behaviour", &behaviour)
            .field("biller_port", &self.biller_port)
            .field("biller", &self.biller)
            .finish()
    }
}

/// One payment channel.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelSettings {
    /// Adapter: `sim` speaks the simulator's protocol.
    pub kind: String,
    /// The channel's API; empty means the in-process simulator.
    pub base_url: String,
    /// Shared secret for requests and callbacks.
    pub secret: Secret,
    /// Requests per second we may send.
    pub qps: u32,
    /// Requests we may send at once above the rate.
    pub burst: u32,
    /// Requests waiting for a slot; beyond it, `channel_busy` at once.
    pub queue_capacity: usize,
    /// Longest a request waits for a slot before `channel_busy`.
    pub queue_timeout_ms: u64,
    /// Timeout of one HTTP request to the channel.
    pub request_timeout_ms: u64,
    /// Most requests in flight to the channel.
    pub max_in_flight: usize,
}

/// One merchant.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantSettings {
    /// Id used in `X-Paycore-Merchant`.
    pub id: String,
    /// HMAC secret.
    pub secret: Secret,
    /// Channels this merchant may use.
    pub channels: Vec<String>,
    /// Requests per second allowed.
    #[serde(default = "default_merchant_rate")]
    pub rate_limit_per_sec: u32,
    /// Requests allowed at once above the rate.
    #[serde(default = "default_merchant_burst")]
    pub rate_limit_burst: u32,
    /// This merchant's default life of an unpaid order (the seed's `delayOrderInterval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_expire_seconds: Option<i64>,
    /// This merchant's poll schedule (the seed's per-tenant `newPayQueryInterval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_schedule_ms: Option<Vec<u64>>,
    /// The merchant's business system, where paid orders are fulfilled (written off); none:
    /// the merchant fulfils orders itself and paycore only reports them paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biller: Option<BillerTarget>,
    /// Where this merchant's notifications go when an order names no `notify_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// The event types this merchant is notified of (default:
    /// `domain::notification::DEFAULT_NOTIFY_EVENTS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_events: Option<Vec<String>>,
}

/// A merchant's business system ("biller"), spoken to with the protocol of `biller-sim`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BillerTarget {
    /// Its API; empty means the in-process business-system simulator.
    #[serde(default)]
    pub url: String,
    /// Shared secret that signs our requests.
    pub secret: Secret,
    /// Timeout of one request.
    #[serde(default = "default_biller_timeout")]
    pub timeout_ms: u64,
    /// Most requests in flight to it at once; a call that finds none free within its timeout
    /// fails like an unanswered one (write-offs are retried on their timer).
    #[serde(default = "default_biller_in_flight")]
    pub max_in_flight: usize,
}

fn default_biller_timeout() -> u64 {
    5_000
}

fn default_biller_in_flight() -> usize {
    64
}

impl MerchantSettings {
    /// What this merchant is notified of, and where by default.
    pub fn subscription(&self) -> crate::domain::notification::Subscription {
        let events = match &self.notify_events {
            Some(v) => v.iter().cloned().collect(),
            None => crate::domain::notification::DEFAULT_NOTIFY_EVENTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        crate::domain::notification::Subscription {
            events,
            default_url: self.notify_url.clone(),
        }
    }
}

fn default_merchant_rate() -> u32 {
    20_000
}
fn default_merchant_burst() -> u32 {
    5_000
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1".into(),
            port: 8080,
            workers: 0,
            runtime_threads: 0,
            body_limit_bytes: 64 * 1024,
            max_connections: 4_096,
            max_in_flight_requests: 4_096,
            backlog: 2_048,
            client_request_timeout_ms: 5_000,
            shutdown_timeout_secs: 30,
            public_base_url: String::new(),
        }
    }
}

impl ServerSettings {
    /// HTTP worker threads: `workers`, or half the cores (at least one). A request passes from
    /// an HTTP worker to the actors' runtime and back, so the two pools work as a pipeline;
    /// each sized to every core would run twice as many busy threads as there are cores, and
    /// the switches between them cost more than the overlap gains (loadtest/ANALYSIS.md,
    /// "Threads").
    pub fn http_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            (cores() / 2).max(1)
        }
    }

    /// The actors' runtime threads: `runtime_threads`, or the cores the HTTP workers leave (at
    /// least one).
    pub fn runtime_threads(&self) -> usize {
        if self.runtime_threads > 0 {
            self.runtime_threads
        } else {
            cores().saturating_sub(self.http_workers()).max(1)
        }
    }
}

/// The cores this process may run on.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            backend: "sqlite".into(),
            sqlite: SqliteSettings::default(),
            scylla: ScyllaSettings::default(),
            purge_interval_secs: 60,
            event_retention_hours: 168,
        }
    }
}

impl Default for SqliteSettings {
    fn default() -> Self {
        Self {
            path: "./data/paycore.db".into(),
            synchronous: Synchronous::Full,
            batch_max_writes: 1024,
            batch_max_wait_us: 0,
            commit_interval_us: 1_000,
            writer_cache_kib: 4_096,
            wal_autocheckpoint_pages: 1_000,
            queue_capacity: 16_384,
            enqueue_timeout_ms: 2_000,
            readers: 4,
            busy_timeout_ms: 5_000,
        }
    }
}

impl Default for ActorSettings {
    fn default() -> Self {
        Self {
            max_live_orders: 5_000,
            idle_passivate_ms: 30_000,
            sweep_interval_ms: 1_000,
            call_timeout_ms: 15_000,
            read_cache_orders: 50_000,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            replay_window_secs: 300,
            nonce_capacity_per_merchant: 8_000_000,
        }
    }
}

impl Default for OrderSettings {
    fn default() -> Self {
        let ms = |v: &[u64]| v.iter().map(|s| s * 1_000).collect();
        Self {
            token_ttl_secs: 1_800,
            default_expire_seconds: 900,
            min_expire_seconds: 60,
            poll_schedule_ms: ms(&[5, 10, 30, 60, 120, 300, 600, 1_800, 3_600]),
            refund_retry_ms: ms(&[
                10, 30, 60, 120, 300, 600, 1_800, 3_600, 3_600, 3_600, 7_200, 7_200,
            ]),
            expire_retry_ms: ms(&[5, 15, 30, 60, 300]),
            fulfillment_retry_ms: ms(&[900; 8]),
        }
    }
}

impl Default for TimerSettings {
    fn default() -> Self {
        Self {
            tick_ms: 200,
            page_size: 512,
            max_in_flight: 256,
            lease_ms: 30_000,
            sweep_interval_ms: 60_000,
            sweep_batch: 1_000,
            overdue_after_ms: 5_000,
            stats_interval_ms: 5_000,
        }
    }
}

impl Default for NotificationSettings {
    fn default() -> Self {
        let s = |v: &[u64]| v.iter().map(|s| s * 1_000).collect();
        Self {
            enabled: true,
            retry_schedule_ms: s(&[
                15, 15, 30, 180, 600, 1_200, 1_800, 1_800, 1_800, 3_600, 10_800, 10_800, 10_800,
                21_600, 21_600,
            ]),
            request_timeout_ms: 5_000,
            max_in_flight: 256,
            max_in_flight_per_merchant: 16,
            tick_ms: 200,
            page_size: 256,
            lease_ms: 60_000,
            batch: 512,
            allow_loopback: false,
            allow_private: false,
        }
    }
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            kind: "in_process".into(),
            relay_batch: 1_024,
            max_consumer_lag: 500_000,
            consumer_linger_ms: 5,
            kafka: KafkaSettings::default(),
        }
    }
}

impl Default for SimulatorSettings {
    fn default() -> Self {
        Self {
            in_process: true,
            bind: "127.0.0.1".into(),
            port: 8090,
            behaviour: SimSettings::default(),
            biller_port: 8091,
            biller: BillerSettings::default(),
        }
    }
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            kind: "sim".into(),
            base_url: String::new(),
            secret: Secret::new(SimSettings::default().secret),
            qps: 5_000,
            burst: 500,
            queue_capacity: 10_000,
            queue_timeout_ms: 2_000,
            request_timeout_ms: 5_000,
            max_in_flight: 512,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        let mut channels = BTreeMap::new();
        channels.insert("sim".to_string(), ChannelSettings::default());
        Self {
            server: ServerSettings::default(),
            storage: StorageSettings::default(),
            actors: ActorSettings::default(),
            auth: AuthSettings::default(),
            orders: OrderSettings::default(),
            stream: StreamSettings::default(),
            timers: TimerSettings::default(),
            notifications: NotificationSettings::default(),
            ledger: LedgerSettings::default(),
            simulator: SimulatorSettings::default(),
            channels,
            merchants: vec![MerchantSettings {
                id: "demo".into(),
                secret: Secret::new("demo-secret-change-me"),
                channels: vec!["sim".into()],
                rate_limit_per_sec: default_merchant_rate(),
                rate_limit_burst: default_merchant_burst(),
                default_expire_seconds: None,
                poll_schedule_ms: None,
                biller: Some(BillerTarget {
                    url: String::new(),
                    secret: Secret::new(BillerSettings::default().secret),
                    timeout_ms: default_biller_timeout(),
                    max_in_flight: default_biller_in_flight(),
                }),
                notify_url: None,
                notify_events: None,
            }],
            admin: AdminSettings::default(),
        }
    }
}

/// A settings error, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML or a value did not parse.
    #[error("invalid settings: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("invalid setting {key}: {why}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// Why.
        why: String,
    },
}

impl Settings {
    /// Loads `path` (if given; a missing default file is fine) and applies environment overrides.
    pub fn load(
        path: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.into(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_toml_and_env(&text, env)
    }

    /// Parses TOML text and applies environment overrides on top of it.
    pub fn from_toml_and_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut value: toml::Value =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        for (key, raw) in env {
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if !rest.contains("__") {
                // Every setting is in a section, so this one names none: a variable of
                // something else's (Kubernetes' service links give a Service named paycore
                // PAYCORE_PORT and the like). A typo of a setting is told apart by its `__`.
                tracing::warn!(variable = %key, "environment variable is not a setting (no __ between section and key); ignored");
                continue;
            }
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            let v = if path
                .last()
                .is_some_and(|k| SECRET_KEYS.contains(&k.as_str()))
            {
                // A secret is taken as it is: all digits is not a number, quotes are its own.
                toml::Value::String(raw.clone())
            } else {
                parse_scalar(&raw)
            };
            set_path(&mut value, &path, v).map_err(|why| ConfigError::Invalid {
                key: key.clone(),
                why,
            })?;
        }
        let settings: Settings = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks ranges and cross-references (every merchant channel exists, and so on).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                why: why.into(),
            })
        };
        if self.server.body_limit_bytes == 0
            || self.server.max_connections == 0
            || self.server.max_in_flight_requests == 0
        {
            return bad(
                "server",
                "body_limit_bytes, max_connections and max_in_flight_requests must be positive",
            );
        }
        if !(1..=65_535).contains(&self.server.backlog) {
            return bad("server.backlog", "must be within 1..=65535");
        }
        if !["sqlite", "scylla"].contains(&self.storage.backend.as_str()) {
            return bad("storage.backend", "must be \"sqlite\" or \"scylla\"");
        }
        if self.storage.backend == "scylla"
            && let Err((key, why)) = self.storage.scylla.validate()
        {
            return bad(&format!("storage.scylla.{key}"), &why);
        }
        let s = &self.storage.sqlite;
        if s.batch_max_writes == 0 || s.queue_capacity == 0 || s.readers == 0 {
            return bad(
                "storage.sqlite",
                "batch_max_writes, queue_capacity and readers must be positive",
            );
        }
        if !(1..=86_400).contains(&self.orders.token_ttl_secs) {
            // A one-time submit token covers one checkout; the CQL backend relies on the bound
            // (a taken token's record outlives the token).
            return bad("orders.token_ttl_secs", "must be within 1..=86400 (a day)");
        }
        if self.actors.max_live_orders == 0 || self.actors.call_timeout_ms == 0 {
            return bad(
                "actors",
                "max_live_orders and call_timeout_ms must be positive",
            );
        }
        if !["in_process", "kafka"].contains(&self.stream.kind.as_str()) {
            return bad("stream.kind", "must be \"in_process\" or \"kafka\"");
        }
        if s.commit_interval_us > 100_000 {
            // Every write waits up to this long: beyond 100 ms it is an outage, not a batch.
            return bad(
                "storage.sqlite.commit_interval_us",
                "must be at most 100000 (100 ms)",
            );
        }
        if !(256..=1_048_576).contains(&s.writer_cache_kib) {
            return bad(
                "storage.sqlite.writer_cache_kib",
                "must be within 256..=1048576 (256 KiB to 1 GiB)",
            );
        }
        if !(100..=100_000).contains(&s.wal_autocheckpoint_pages) {
            return bad(
                "storage.sqlite.wal_autocheckpoint_pages",
                "must be within 100..=100000",
            );
        }
        if self.stream.consumer_linger_ms > 10_000 {
            return bad("stream.consumer_linger_ms", "must be at most 10000 (10 s)");
        }
        if !(1..=100_000).contains(&self.stream.relay_batch) {
            return bad("stream.relay_batch", "must be within 1..=100000");
        }
        if self.stream.max_consumer_lag == 0 {
            return bad("stream.max_consumer_lag", "must be positive");
        }
        let k = &self.stream.kafka;
        if (self.stream.kind == "kafka" || k.commands.enabled)
            && let Err((key, why)) = k.validate()
        {
            return bad(&format!("stream.kafka.{key}"), &why);
        }
        if self.stream.kind == "kafka"
            && self.stream.relay_batch as u64 > u64::from(k.queue_max_messages)
        {
            return bad(
                "stream.relay_batch",
                "must not exceed stream.kafka.queue_max_messages (a batch must fit the producer queue)",
            );
        }
        let o = &self.orders;
        if !(1..=86_400).contains(&o.min_expire_seconds) {
            return bad("orders.min_expire_seconds", "must be within 1..=86400");
        }
        let expire_range = o.min_expire_seconds..=86_400;
        if !expire_range.contains(&o.default_expire_seconds) {
            return bad(
                "orders.default_expire_seconds",
                "must be within min_expire_seconds..=86400",
            );
        }
        for (key, v) in [
            ("orders.refund_retry_ms", &o.refund_retry_ms),
            ("orders.expire_retry_ms", &o.expire_retry_ms),
            ("orders.poll_schedule_ms", &o.poll_schedule_ms),
        ] {
            if v.is_empty() || v.len() > MAX_SCHEDULE_LEN || v.contains(&0) {
                return bad(key, "must list 1..=64 positive delays");
            }
        }
        // No retries at all is allowed: the first failure gives fulfillment up.
        if o.fulfillment_retry_ms.len() > MAX_SCHEDULE_LEN || o.fulfillment_retry_ms.contains(&0) {
            return bad(
                "orders.fulfillment_retry_ms",
                "must list at most 64 positive delays",
            );
        }
        let t = &self.timers;
        if t.tick_ms == 0
            || t.page_size == 0
            || t.max_in_flight == 0
            || t.lease_ms == 0
            || t.sweep_interval_ms == 0
            || t.sweep_batch == 0
            || t.stats_interval_ms == 0
        {
            return bad("timers", "every setting must be positive");
        }
        let n = &self.notifications;
        if n.retry_schedule_ms.is_empty()
            || n.retry_schedule_ms.len() > MAX_SCHEDULE_LEN
            || n.retry_schedule_ms.contains(&0)
        {
            return bad(
                "notifications.retry_schedule_ms",
                "must list 1..=64 positive delays",
            );
        }
        if n.request_timeout_ms == 0
            || n.max_in_flight == 0
            || n.max_in_flight_per_merchant == 0
            || n.tick_ms == 0
            || n.page_size == 0
            || n.batch == 0
        {
            return bad("notifications", "every bound must be positive");
        }
        if n.lease_ms <= n.request_timeout_ms {
            // A lease that ran out during an attempt would let a second attempt overlap it.
            return bad(
                "notifications.lease_ms",
                "must be longer than request_timeout_ms",
            );
        }
        let token = self.admin.token.expose();
        if !token.is_empty() && token.len() < MIN_ADMIN_TOKEN_LEN {
            return bad(
                "admin.token",
                "must be empty (off) or at least 32 characters",
            );
        }
        if let Some(key) = exposure::demo_secret_exposed(self) {
            return bad(
                &key,
                &format!(
                    "is a secret published with paycore, and server.bind {:?} is not loopback: set your own",
                    self.server.bind
                ),
            );
        }
        if !(1..=MAX_LEDGER_BATCH).contains(&self.ledger.batch) {
            return bad("ledger.batch", "must be within 1..=10000");
        }
        let policy = n.address_policy();
        self.simulator
            .behaviour
            .validate()
            .map_err(|why| ConfigError::Invalid {
                key: "simulator.behaviour".into(),
                why,
            })?;
        self.simulator
            .biller
            .validate()
            .map_err(|why| ConfigError::Invalid {
                key: "simulator.biller".into(),
                why,
            })?;
        for (name, c) in &self.channels {
            if c.secret.expose().len() < 16 {
                return bad(
                    &format!("channels.{name}.secret"),
                    "must be at least 16 characters",
                );
            }
            if c.kind != "sim" {
                return bad(
                    &format!("channels.{name}.kind"),
                    "only \"sim\" channels are available in this build",
                );
            }
            if c.qps == 0 || c.burst == 0 || c.queue_capacity == 0 || c.max_in_flight == 0 {
                return bad(
                    &format!("channels.{name}"),
                    "qps, burst, queue_capacity and max_in_flight must be positive",
                );
            }
            if c.base_url.is_empty() && !self.simulator.in_process {
                return bad(
                    &format!("channels.{name}.base_url"),
                    "empty, but the in-process simulator is off",
                );
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, m) in self.merchants.iter().enumerate() {
            if crate::domain::MerchantId::parse(&m.id).is_err() || !seen.insert(m.id.clone()) {
                return bad(
                    &format!("merchants.{i}.id"),
                    "must be a unique 1..64 character [A-Za-z0-9_-] id",
                );
            }
            if m.secret.expose().len() < 16 {
                return bad(
                    &format!("merchants.{i}.secret"),
                    "must be at least 16 characters",
                );
            }
            if m.rate_limit_per_sec == 0 || m.rate_limit_burst == 0 {
                return bad(&format!("merchants.{i}"), "rate limits must be positive");
            }
            if m.default_expire_seconds
                .is_some_and(|e| !expire_range.contains(&e))
            {
                return bad(
                    &format!("merchants.{i}.default_expire_seconds"),
                    "must be within orders.min_expire_seconds..=86400",
                );
            }
            if m.poll_schedule_ms
                .as_ref()
                .is_some_and(|v| v.is_empty() || v.len() > MAX_SCHEDULE_LEN || v.contains(&0))
            {
                return bad(
                    &format!("merchants.{i}.poll_schedule_ms"),
                    "must list 1..=64 positive delays",
                );
            }
            if let Some(b) = &m.biller {
                if b.url.is_empty() && !self.simulator.in_process {
                    return bad(
                        &format!("merchants.{i}.biller.url"),
                        "empty, but the in-process simulator is off",
                    );
                }
                let http = b.url.starts_with("http://") || b.url.starts_with("https://");
                if !(b.url.is_empty() || http) {
                    return bad(
                        &format!("merchants.{i}.biller.url"),
                        "must be an http(s) URL",
                    );
                }
                if b.timeout_ms == 0 || b.max_in_flight == 0 || b.secret.expose().is_empty() {
                    return bad(
                        &format!("merchants.{i}.biller"),
                        "timeout_ms and max_in_flight must be positive and secret set",
                    );
                }
            }
            if let Some(url) = &m.notify_url
                && let Err(why) = crate::domain::order::parse_notify_url(url, &policy)
            {
                return bad(&format!("merchants.{i}.notify_url"), &why);
            }
            if let Some(t) = m
                .notify_events
                .iter()
                .flatten()
                .find(|t| !crate::domain::EVENT_TYPES.contains(&t.as_str()))
            {
                return bad(
                    &format!("merchants.{i}.notify_events"),
                    &format!("unknown event type {t}"),
                );
            }
            if let Some(c) = m.channels.iter().find(|c| !self.channels.contains_key(*c)) {
                return bad(
                    &format!("merchants.{i}.channels"),
                    &format!("unknown channel {c}"),
                );
            }
        }
        Ok(())
    }
}

/// Keys whose environment values are secrets, taken verbatim (never parsed as TOML).
const SECRET_KEYS: &[&str] = &["secret", "token", "password", "sasl_password"];

/// Reads an environment value as TOML when it is a TOML scalar or array, else as a string.
fn parse_scalar(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn set_path(root: &mut toml::Value, path: &[String], v: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    let mut cur = root;
    for seg in parents {
        cur = match cur {
            toml::Value::Table(t) => t
                .entry(seg.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new())),
            toml::Value::Array(a) => {
                let i: usize = seg
                    .parse()
                    .map_err(|_| format!("{seg} is not a list index"))?;
                a.get_mut(i).ok_or_else(|| format!("no list entry {i}"))?
            }
            _ => return Err(format!("{seg} is not a table")),
        };
    }
    match cur {
        toml::Value::Table(t) => {
            t.insert(last.clone(), v);
            Ok(())
        }
        toml::Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("{last} is not a list index"))?;
            *a.get_mut(i).ok_or_else(|| format!("no list entry {i}"))? = v;
            Ok(())
        }
        _ => Err(format!("{last}: parent is not a table")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Unset thread counts split the cores between the HTTP workers and the runtime, one
    /// each at least; set ones are kept.
    #[test]
    fn thread_counts_split_the_cores_unless_set() {
        let auto = ServerSettings::default();
        let (http, runtime) = (auto.http_workers(), auto.runtime_threads());
        assert!(http >= 1 && runtime >= 1);
        // Together no more threads than cores (two on a one-core machine).
        assert!(http + runtime <= cores().max(2), "{http} + {runtime}");
        let set = ServerSettings {
            workers: 3,
            runtime_threads: 5,
            ..ServerSettings::default()
        };
        assert_eq!((set.http_workers(), set.runtime_threads()), (3, 5));
    }

    #[test]
    fn the_shipped_config_toml_parses_to_the_defaults() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let s = Settings::from_toml_and_env(&text, []).unwrap();
        let mut d = Settings::default();
        // The one difference, on purpose: the shipped file lets the demo notify a local URL.
        d.notifications.allow_loopback = true;
        assert_eq!(toml::to_string(&s).unwrap(), toml::to_string(&d).unwrap());
    }

    #[test]
    fn environment_overrides_file() {
        let s = Settings::from_toml_and_env(
            "[server]\nport = 1",
            env(&[
                ("PAYCORE_SERVER__PORT", "9090"),
                ("PAYCORE_STORAGE__SQLITE__PATH", "/tmp/x.db"),
                ("OTHER", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.port, 9090);
        assert_eq!(s.storage.sqlite.path, "/tmp/x.db");
    }

    #[test]
    fn secrets_from_the_environment_are_taken_verbatim_and_other_programs_variables_ignored() {
        let s = Settings::from_toml_and_env(
            include_str!("../config.toml"),
            env(&[
                ("PAYCORE_MERCHANTS__0__SECRET", "1234567890123456"),
                ("PAYCORE_CHANNELS__SIM__SECRET", "\"quoted-channel-secret\""),
                // Kubernetes' service links for a Service named paycore.
                ("PAYCORE_PORT", "tcp://10.0.0.1:8080"),
                ("PAYCORE_SERVICE_HOST", "10.0.0.1"),
            ]),
        )
        .unwrap();
        assert_eq!(s.merchants[0].secret.expose(), "1234567890123456");
        assert_eq!(
            s.channels["sim"].secret.expose(),
            "\"quoted-channel-secret\""
        );
        // A setting's typo still stops start-up.
        let typo = env(&[("PAYCORE_SERVER__PROT", "1")]);
        assert!(Settings::from_toml_and_env("", typo).is_err());
        let short = env(&[("PAYCORE_CHANNELS__SIM__SECRET", "short")]);
        let err = Settings::from_toml_and_env(include_str!("../config.toml"), short).unwrap_err();
        assert!(err.to_string().contains("channels.sim.secret"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(Settings::from_toml_and_env("[server]\nprot = 1", []).is_err());
        assert!(Settings::from_toml_and_env("", env(&[("PAYCORE_SERVER__PORT", "x")])).is_err());
        assert!(Settings::from_toml_and_env("[actors]\nmax_live_orders = 0", []).is_err());
        let err = Settings::from_toml_and_env(
            "[[merchants]]\nid = \"m\"\nsecret = \"short\"\nchannels = []",
            [],
        );
        assert!(
            matches!(err, Err(ConfigError::Invalid { key, .. }) if key == "merchants.0.secret")
        );
        let merchant = |extra: &str| {
            format!(
                "[[merchants]]\nid = \"m\"\nsecret = \"0123456789abcdef\"\nchannels = []\n{extra}"
            )
        };
        let key_of = |r: Result<Settings, ConfigError>| match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => format!("{other:?}"),
        };
        assert_eq!(
            key_of(Settings::from_toml_and_env(
                &merchant("notify_events = [\"order.paid\", \"order.teleported\"]"),
                []
            )),
            "merchants.0.notify_events"
        );
        assert_eq!(
            key_of(Settings::from_toml_and_env(
                &merchant("notify_url = \"http://10.1.2.3/n\""),
                []
            )),
            "merchants.0.notify_url"
        );
        let ok = Settings::from_toml_and_env(
            &merchant("notify_url = \"https://m.example/n\"\nnotify_events = [\"order.paid\"]"),
            [],
        )
        .unwrap();
        let sub = ok.merchants[0].subscription();
        assert_eq!(sub.events.len(), 1);
        assert_eq!(sub.default_url.as_deref(), Some("https://m.example/n"));
        assert!(
            Settings::from_toml_and_env("[notifications]\nretry_schedule_ms = []", []).is_err()
        );
        assert!(Settings::from_toml_and_env("[notifications]\nlease_ms = 10", []).is_err());
        assert!(Settings::from_toml_and_env("[notifications]\nretries = 3", []).is_err());
        assert!(Settings::from_toml_and_env("[ledger]\nbatch = 0", []).is_err());
        assert!(Settings::from_toml_and_env("[ledger]\nbatch = 10001", []).is_err());
        assert!(Settings::from_toml_and_env("[ledger]\nbatches = 5", []).is_err());
        let ledger = Settings::from_toml_and_env("[ledger]\nenabled = false\nbatch = 50", [])
            .unwrap()
            .ledger;
        assert_eq!((ledger.enabled, ledger.batch), (false, 50));
        let defaults = Settings::default().ledger;
        assert_eq!((defaults.enabled, defaults.batch), (true, 1_000));
    }

    #[test]
    fn kafka_settings_come_from_the_environment_and_are_checked_only_when_used() {
        let s = Settings::from_toml_and_env(
            "[stream]\nkind = \"kafka\"",
            env(&[
                ("PAYCORE_STREAM__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
                ("PAYCORE_STREAM__KAFKA__COMMANDS__ENABLED", "true"),
                ("PAYCORE_STREAM__KAFKA__PROPERTIES__COMPRESSION.TYPE", "lz4"),
            ]),
        )
        .unwrap();
        assert_eq!(s.stream.kafka.bootstrap_servers, "127.0.0.1:9092");
        assert!(s.stream.kafka.commands.enabled);
        assert_eq!(s.stream.kafka.properties["compression.type"], "lz4");
        let key_of = |r: Result<Settings, ConfigError>| match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => format!("{other:?}"),
        };
        assert_eq!(
            key_of(Settings::from_toml_and_env("[stream]\nkind = \"nats\"", [])),
            "stream.kind"
        );
        assert_eq!(
            key_of(Settings::from_toml_and_env(
                "[stream]\nconsumer_linger_ms = 10001",
                []
            )),
            "stream.consumer_linger_ms"
        );
        assert_eq!(
            key_of(Settings::from_toml_and_env(
                "[storage.sqlite]\ncommit_interval_us = 100001",
                []
            )),
            "storage.sqlite.commit_interval_us"
        );
        for bad_pages in ["99", "100001"] {
            assert_eq!(
                key_of(Settings::from_toml_and_env(
                    &format!("[storage.sqlite]\nwal_autocheckpoint_pages = {bad_pages}"),
                    []
                )),
                "storage.sqlite.wal_autocheckpoint_pages"
            );
        }
        for bad_cache in ["255", "1048577"] {
            assert_eq!(
                key_of(Settings::from_toml_and_env(
                    &format!("[storage.sqlite]\nwriter_cache_kib = {bad_cache}"),
                    []
                )),
                "storage.sqlite.writer_cache_kib"
            );
        }
        let bad_kafka = "[stream.kafka]\nsecurity_protocol = \"tls\"";
        // Unused, bad Kafka settings do not stop an embedded start...
        assert!(Settings::from_toml_and_env(bad_kafka, []).is_ok());
        // ...but do as soon as Kafka is used.
        assert_eq!(
            key_of(Settings::from_toml_and_env(
                &format!("{bad_kafka}\n[stream.kafka.commands]\nenabled = true"),
                []
            )),
            "stream.kafka.security_protocol"
        );
        assert_eq!(
            key_of(Settings::from_toml_and_env(
                "[stream]\nkind = \"kafka\"\nrelay_batch = 5000\n[stream.kafka]\nqueue_max_messages = 1000",
                []
            )),
            "stream.relay_batch"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Settings::default();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("demo-secret-change-me"), "{dbg}");
        assert!(!dbg.contains("sim-secret-change-me"), "{dbg}");
    }
}
