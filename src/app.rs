//! Start-up and shutdown of the whole service from one `Settings` value. `Application::build`
//! binds the ports, opens storage, starts the simulator (when in-process), spawns the actor
//! tree, the timer scheduler, the outbox relay (to Kafka, when configured), the merchant
//! notifier, the ledger, the purge task and (when configured) the Kafka command consumer, and
//! starts HTTP; tests use it exactly as `paycore serve` does, on port 0 against a temp
//! directory. The notifier and the ledger are consumers of the log, each on its own cursor.

mod reload;

use crate::actors::ledger::{self, LedgerDeps};
use crate::actors::notifier::{self, NotifierDeps};
use crate::actors::supervisor::{self, Tree};
use crate::actors::{LedgerReads, Notifications, Orders, order::OrderDeps};
use crate::channels::{self, PaymentChannel};
use crate::config::Settings;
use crate::config::live::Live;
use crate::http::{self, AppState};
use crate::kafka::CommandDeps;
use crate::metrics::Metrics;
use crate::storage::backend::Backend;
use crate::storage::{LedgerStore, NotificationStore, OrderStore};
use crate::streams::consumer::{self, Health, LogConsumer, RunSpec};
use crate::streams::kafka::KafkaSink;
use crate::streams::{EventSink, relay};
use actix_web::{App, HttpServer, web};
use paycore_channel_sim::SimHandle;
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Most purge slices in one round (a slice is bounded by the store).
const PURGE_SLICES_PER_ROUND: usize = 1_000;
/// Pause between purge slices, so commits run in between.
const PURGE_PAUSE: Duration = Duration::from_millis(20);

/// How long shutdown waits for order and channel actors to drain their mailboxes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A start-up failure.
#[derive(Debug, thiserror::Error)]
#[error("start-up failed: {0}")]
pub struct StartError(pub String);

fn err(what: &str) -> impl Fn(String) -> StartError + '_ {
    move |e| StartError(format!("{what}: {e}"))
}

/// The running service.
pub struct Application {
    port: u16,
    server: actix_web::dev::ServerHandle,
    server_task: JoinHandle<std::io::Result<()>>,
    sim: Option<SimHandle>,
    biller_sim: Option<paycore_biller_sim::BillerHandle>,
    tree: Tree,
    backend: Backend,
    health: Health,
    orders: Orders,
    operations: http::operations::Operations,
    shutdown: watch::Sender<bool>,
    background: Vec<JoinHandle<()>>,
    stop_timers: watch::Sender<bool>,
    scheduler: JoinHandle<()>,
    stop_commands: watch::Sender<bool>,
    commands: Option<JoinHandle<()>>,
    reloader: Arc<reload::Reloader>,
}

impl Application {
    /// Builds and starts everything. Must run inside a multi-thread tokio runtime.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        settings.validate().map_err(|e| StartError(e.to_string()))?;
        let metrics = Arc::new(Metrics::new());

        let listener = listen(
            &settings.server.bind,
            settings.server.port,
            settings.server.backlog,
        )
        .map_err(|e| err("bind HTTP")(e.to_string()))?;
        let port = listener
            .local_addr()
            .map_err(|e| err("HTTP address")(e.to_string()))?
            .port();
        let callback_base_url = if settings.server.public_base_url.is_empty() {
            let host = if settings.server.bind == "0.0.0.0" {
                "127.0.0.1"
            } else {
                settings.server.bind.as_str()
            };
            format!("http://{host}:{port}")
        } else {
            settings
                .server
                .public_base_url
                .trim_end_matches('/')
                .to_string()
        };

        let backend = Backend::open(&settings.storage, metrics.clone())
            .await
            .map_err(|e| err("storage")(e.to_string()))?;
        let store = backend.orders.clone();
        // The embedded log needs no relay: the outbox is the stream, read by each consumer.
        // An external transport (Kafka, with stream.kind = "kafka") gets one; without it the relay's cursor
        // must not hold the purge.
        let sink: Option<Arc<dyn EventSink>> = match settings.stream.kind.as_str() {
            "kafka" => Some(Arc::new(
                KafkaSink::new(&settings.stream.kafka).map_err(|e| err("stream")(e.to_string()))?,
            )),
            _ => None,
        };
        if sink.is_none() {
            store
                .drop_cursor(relay::CURSOR)
                .await
                .map_err(|e| err("relay cursor")(e.to_string()))?;
        } else {
            store
                .register_cursor(relay::CURSOR)
                .await
                .map_err(|e| err("relay cursor")(e.to_string()))?;
        }
        // The notifier's cursor is registered before anything can commit an event (timers fire
        // as soon as the scheduler starts): a notifier switched on for the first time starts
        // at the end of the outbox as it is now, and from then on the purge waits for it.
        let notification_store: Arc<dyn NotificationStore> = backend.notifications.clone();
        if settings.notifications.enabled {
            store
                .register_cursor(notifier::CURSOR)
                .await
                .map_err(|e| err("notifier cursor")(e.to_string()))?;
        } else {
            // Switched off, it must not hold the outbox purge.
            store
                .drop_cursor(notifier::CURSOR)
                .await
                .map_err(|e| err("notifier cursor")(e.to_string()))?;
        }
        // The ledger's cursor likewise, so the purge never deletes an event before it is booked.
        if settings.ledger.enabled {
            store
                .register_cursor(ledger::CURSOR)
                .await
                .map_err(|e| err("ledger cursor")(e.to_string()))?;
        } else {
            store
                .drop_cursor(ledger::CURSOR)
                .await
                .map_err(|e| err("ledger cursor")(e.to_string()))?;
        }
        let ledger_store: Arc<dyn LedgerStore> = backend.ledger.clone();

        let sim = if settings.simulator.in_process {
            let l = listen(
                &settings.simulator.bind,
                settings.simulator.port,
                settings.server.backlog,
            )
            .map_err(|e| err("bind simulator")(e.to_string()))?;
            Some(
                paycore_channel_sim::start(settings.simulator.behaviour.clone(), l)
                    .map_err(|e| err("simulator")(e.to_string()))?,
            )
        } else {
            None
        };
        let sim_url = sim.as_ref().map(|s| s.base_url());
        let biller_sim = if settings.simulator.in_process {
            let l = listen(
                &settings.simulator.bind,
                settings.simulator.biller_port,
                settings.server.backlog,
            )
            .map_err(|e| err("bind business-system simulator")(e.to_string()))?;
            Some(
                paycore_biller_sim::start(settings.simulator.biller.clone(), l)
                    .map_err(|e| err("business-system simulator")(e.to_string()))?,
            )
        } else {
            None
        };
        let biller_url = biller_sim.as_ref().map(|b| b.base_url());
        let billers = reload::billers_of(&settings, biller_url.as_deref(), &HashMap::new())
            .map_err(err("business system"))?;
        let rules = Arc::new(Live::new(reload::rules_of(&settings, &settings, billers)));

        let mut adapters: HashMap<String, Arc<dyn PaymentChannel>> = HashMap::new();
        let mut channel_specs = Vec::new();
        for (name, cs) in &settings.channels {
            let adapter = channels::build(cs, sim_url.as_deref()).map_err(err("channel"))?;
            adapters.insert(name.clone(), adapter.clone());
            channel_specs.push((name.clone(), adapter, cs.clone()));
        }

        let order_store: Arc<dyn OrderStore> = store.clone();
        let cache = crate::actors::order_cache::OrderCache::new(settings.actors.read_cache_orders);
        let tree = supervisor::spawn_tree(
            settings.actors.clone(),
            channel_specs,
            metrics.clone(),
            |handles| OrderDeps {
                store: order_store.clone(),
                channels: handles,
                callback_base_url,
                metrics: metrics.clone(),
                cache: cache.clone(),
                schedule: Arc::new(settings.orders.schedule(None)),
                merchants: rules.clone(),
            },
        )
        .await
        .map_err(err("actors"))?;
        let orders = Orders::new(
            order_store.clone(),
            tree.registry.clone(),
            Duration::from_millis(settings.actors.call_timeout_ms),
            settings.orders.token_ttl_secs,
            metrics.clone(),
            cache,
        );

        let notify_wake = Arc::new(tokio::sync::Notify::new());
        let notifications = Notifications::new(
            notification_store.clone(),
            orders.clone(),
            notify_wake.clone(),
        );

        let (stop_timers, stop_timers_rx) = watch::channel(false);
        let scheduler = tokio::spawn(crate::actors::scheduler::run(
            order_store.clone(),
            orders.clone(),
            settings.timers.clone(),
            metrics.clone(),
            stop_timers_rx,
        ));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let health = Health::default();
        let linger = Duration::from_millis(settings.stream.consumer_linger_ms);
        let mut background = Vec::new();
        if let Some(sink) = &sink {
            let spec = RunSpec {
                name: relay::CURSOR.to_string(),
                partition: 0,
                store: order_store.clone(),
                commits: store.watch_commits(),
                batch: settings.stream.relay_batch,
                linger,
            };
            let relay = Arc::new(relay::Relay {
                store: order_store.clone(),
                sink: sink.clone(),
                metrics: metrics.clone(),
            });
            background.extend(consumer::spawn_partitions(
                spec,
                relay,
                &health,
                metrics.clone(),
                shutdown_rx.clone(),
            ));
        }
        let notifier_merchants = Arc::new(notifier::NotifierMerchants::new(
            &settings.merchants,
            settings.notifications.max_in_flight_per_merchant,
        ));
        if settings.notifications.enabled {
            let deps = NotifierDeps {
                events: order_store.clone(),
                store: notification_store,
                settings: settings.notifications.clone(),
                merchants: notifier_merchants.clone(),
                metrics: metrics.clone(),
                commits: store.watch_commits(),
                wake: notify_wake,
                linger,
            };
            background.extend(
                notifier::spawn(deps, health.clone(), shutdown_rx.clone())
                    .map_err(err("notifier"))?,
            );
        }
        if settings.ledger.enabled {
            let deps = LedgerDeps {
                events: order_store.clone(),
                store: ledger_store.clone(),
                batch: settings.ledger.batch,
                metrics: metrics.clone(),
                commits: store.watch_commits(),
                linger,
            };
            background.extend(ledger::spawn(deps, health.clone(), shutdown_rx.clone()));
        }
        if settings.ledger.enabled && settings.ledger.verify_interval_secs > 0 {
            background.push(tokio::spawn(verify_loop(
                order_store.clone(),
                ledger_store.clone(),
                Duration::from_secs(settings.ledger.verify_interval_secs),
                metrics.clone(),
                shutdown_rx.clone(),
            )));
        }
        background.push(tokio::spawn(purge_loop(
            order_store.clone(),
            Duration::from_secs(settings.storage.purge_interval_secs.max(1)),
            time::Duration::hours(settings.storage.event_retention_hours as i64),
            shutdown_rx,
        )));

        let auth = Arc::new(
            http::auth::Authenticator::new(&settings.merchants, &settings.auth)
                .map_err(err("merchants"))?,
        );
        let expire_seconds = Arc::new(Live::new(reload::expire_seconds_of(&settings)));
        let operations = http::operations::Operations {
            orders: orders.clone(),
            default_expire_seconds: settings.orders.default_expire_seconds,
            merchant_expire_seconds: expire_seconds.clone(),
            min_expire_seconds: settings.orders.min_expire_seconds,
            notify_policy: settings.notifications.address_policy(),
        };
        // Commands are intake like HTTP: they stop first at shutdown (their own signal), and
        // finish and commit before the actors drain and storage closes.
        let (stop_commands, stop_commands_rx) = watch::channel(false);
        let commands = if settings.stream.kafka.commands.enabled {
            let deps = CommandDeps {
                operations: operations.clone(),
                auth: auth.clone(),
                replies: store.clone(),
                metrics: metrics.clone(),
            };
            Some(crate::kafka::spawn(
                deps,
                settings.stream.kafka.clone(),
                health.clone(),
                stop_commands_rx,
            ))
        } else {
            None
        };
        let reloader = Arc::new(reload::Reloader {
            file: Live::new(None),
            started: settings.clone(),
            applied: tokio::sync::Mutex::new(settings.clone()),
            auth: auth.clone(),
            expire_seconds,
            rules,
            notifier: notifier_merchants,
            channels: tree.channels.clone(),
            admin_token: Arc::new(Live::new(settings.admin.token.expose().to_string())),
            biller_sim_url: biller_url.clone(),
            metrics: metrics.clone(),
        });
        let state = web::Data::new(AppState {
            orders: orders.clone(),
            notifications,
            ledger: LedgerReads::new(ledger_store, orders.clone()),
            auth,
            channels: adapters,
            store: order_store,
            sink,
            health: health.clone(),
            max_consumer_lag: settings.stream.max_consumer_lag,
            metrics,
            body_limit: settings.server.body_limit_bytes,
            operations: operations.clone(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                settings.server.max_in_flight_requests,
            )),
            max_in_flight: settings.server.max_in_flight_requests,
            reload: Some(reloader.clone()),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(http::configure)
        })
        .max_connections(settings.server.max_connections)
        .client_request_timeout(Duration::from_millis(
            settings.server.client_request_timeout_ms,
        ))
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        .workers(settings.server.http_workers())
        .disable_signals()
        .listen(listener)
        .map_err(|e| err("HTTP")(e.to_string()))?
        .run();
        let handle = server.handle();
        let server_task = tokio::spawn(server);
        tracing::info!(port, "paycore is listening");
        Ok(Self {
            port,
            server: handle,
            server_task,
            sim,
            biller_sim,
            tree,
            backend,
            health,
            orders,
            operations,
            shutdown,
            background,
            stop_timers,
            scheduler,
            stop_commands,
            commands,
            reloader,
        })
    }

    /// Names the settings file a reload reads again (none: built-in defaults and the
    /// environment, as at start).
    pub fn reload_from(self, file: Option<String>) -> Self {
        self.reloader.file.set(file);
        self
    }

    /// Reads the settings again and applies what can change live (as SIGHUP and
    /// `POST /admin/reload` do); an error changes nothing.
    pub async fn reload(&self) -> Result<http::admin::ReloadReport, String> {
        use http::admin::Reload;
        self.reloader.reload().await
    }

    /// The bound HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The in-process simulator's base URL, when it runs.
    pub fn simulator_url(&self) -> Option<String> {
        self.sim.as_ref().map(|s| s.base_url())
    }

    /// The in-process business-system simulator's base URL, when it runs.
    pub fn biller_simulator_url(&self) -> Option<String> {
        self.biller_sim.as_ref().map(|s| s.base_url())
    }

    /// The store (for benchmarks and tests that seed it).
    pub fn store(&self) -> Arc<dyn OrderStore> {
        self.backend.orders.clone()
    }

    /// The ledger store (for tests that reconcile it).
    pub fn ledger(&self) -> Arc<dyn LedgerStore> {
        self.backend.ledger.clone()
    }

    /// The order front door (for tests and embedding).
    pub fn orders(&self) -> &Orders {
        &self.orders
    }

    /// The stored replies of Kafka commands (for tests and embedding).
    pub fn command_store(&self) -> Arc<dyn crate::storage::CommandStore> {
        self.backend.orders.clone()
    }

    /// The order operations HTTP and Kafka commands share (for tests and embedding).
    pub fn operations(&self) -> &http::operations::Operations {
        &self.operations
    }

    /// Opens the durable log consumer `name` (registering its cursor when it is new: it then
    /// sees what is committed from now on). Until [`LogConsumer::unregister`], the purge keeps
    /// every event it has not committed.
    pub async fn consumer(&self, name: &str) -> Result<LogConsumer, crate::storage::StoreError> {
        LogConsumer::open(
            self.backend.orders.clone(),
            self.backend.orders.watch_commits(),
            name,
        )
        .await
    }

    /// The supervised stream tasks' states.
    pub fn stream_health(&self) -> Health {
        self.health.clone()
    }

    /// Runs until SIGTERM or ctrl-c, then shuts down.
    pub async fn run_until_signalled(self) {
        wait_for_signal(&self.reloader).await;
        tracing::info!("shutdown signal received");
        self.shutdown().await;
    }

    /// Stops in data-flow order: Kafka command intake (in-flight commands finish, replies are
    /// acknowledged, offsets committed), HTTP intake (in-flight requests finish), order and channel
    /// actors drain their mailboxes, the relay publishes what is committed and the notifier
    /// takes it in (its attempts in flight end and are recorded; the rest wait in storage), the
    /// ledger books it, the
    /// writer commits what is queued and closes, and the simulator stops.
    pub async fn shutdown(self) {
        // Kafka commands are intake too: stop fetching, let those in flight finish (their
        // replies acknowledged) and commit their offsets while the actors still answer.
        let _ = self.stop_commands.send(true);
        if let Some(commands) = self.commands {
            let _ = commands.await;
        }
        self.server.stop(true).await;
        let _ = self.server_task.await;
        // Timers are intake too: stop handing them out (those due later stay in storage).
        let _ = self.stop_timers.send(true);
        let _ = self.scheduler.await;
        let _ = self
            .tree
            .supervisor
            .call(
                |r| supervisor::Msg::Shutdown(DRAIN_TIMEOUT, r),
                Some(DRAIN_TIMEOUT * 3),
            )
            .await;
        self.tree.supervisor.stop(None);
        let _ = self.shutdown.send(true);
        for task in self.background {
            let _ = task.await;
        }
        self.backend.orders.close().await;
        if let Some(sim) = self.sim {
            sim.stop().await;
        }
        if let Some(biller) = self.biller_sim {
            biller.stop().await;
        }
        tracing::info!("paycore stopped");
    }
}

/// A listening socket with an explicit accept backlog. `std::net::TcpListener::bind` listens
/// with a backlog of 128: a burst of new connections beyond it (a gateway reconnecting its
/// pool, an open-loop load test starting) had its SYNs dropped and waited ~1 s for the
/// client's retransmit. Must run inside a tokio runtime.
pub fn listen(bind: &str, port: u16, backlog: u32) -> std::io::Result<TcpListener> {
    use std::net::ToSocketAddrs;
    let addr = (bind, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("no address for {bind}"),
        )
    })?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's bind does on Unix: a restart can bind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)?.into_std()
}

/// Longest wait for the first ledger verify after a start.
const FIRST_VERIFY_AFTER: Duration = Duration::from_secs(300);

/// Reconciles the whole ledger every `every` (the first time sooner) as `paycore ledger
/// verify` does, and exports the result: an operator's alert on the ledger needs no cron job.
async fn verify_loop(
    orders: Arc<dyn OrderStore>,
    ledger: Arc<dyn LedgerStore>,
    every: Duration,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    use crate::actors::ledger_verify::{VerifyLimits, verify};
    let mut wait = every.min(FIRST_VERIFY_AFTER);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        wait = every;
        let started = std::time::Instant::now();
        let limits = VerifyLimits {
            max_listed: 10,
            ..VerifyLimits::default()
        };
        let report = tokio::select! {
            r = verify(orders.as_ref(), ledger.as_ref(), limits) => r,
            _ = shutdown.changed() => return,
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
        let ops = &metrics.ops;
        ops.ledger_verify_last_run.set(now);
        match report {
            Ok(r) if r.passed() => {
                ops.ledger_verify_runs.with_label_values(&["passed"]).inc();
                ops.ledger_verify_failures.set(0);
                ops.ledger_verify_last_success.set(now);
                tracing::info!(
                    orders = r.orders_checked,
                    postings = r.postings,
                    seconds = started.elapsed().as_secs_f64(),
                    "ledger verify passed"
                );
            }
            Ok(r) => {
                ops.ledger_verify_runs.with_label_values(&["failed"]).inc();
                ops.ledger_verify_failures
                    .set(i64::try_from(r.failures).unwrap_or(i64::MAX));
                tracing::error!(failures = r.failures, first = ?r.failures_listed, "ledger verify failed: run `paycore ledger verify` for the list");
            }
            Err(e) => {
                ops.ledger_verify_runs.with_label_values(&["error"]).inc();
                tracing::warn!(error = %e, "ledger verify could not read the ledger");
            }
        }
    }
}

async fn purge_loop(
    store: Arc<dyn OrderStore>,
    every: Duration,
    retention: time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        // Each call deletes a bounded slice; keep going while it finds work, pausing between
        // slices so commits are never held up for long, up to a bound per round.
        let mut removed = 0u64;
        for _ in 0..PURGE_SLICES_PER_ROUND {
            if *shutdown.borrow() {
                return;
            }
            let now = time::OffsetDateTime::now_utc();
            match store.purge(now, now - retention).await {
                Ok(0) => break,
                Ok(n) => removed += n,
                Err(e) => {
                    tracing::warn!(error = %e, "purge failed");
                    break;
                }
            }
            tokio::time::sleep(PURGE_PAUSE).await;
        }
        if removed > 0 {
            tracing::info!(rows = removed, "purged expired tokens and delivered events");
        }
    }
}

/// Waits for SIGTERM or ctrl-c; reloads the settings on each SIGHUP meanwhile.
async fn wait_for_signal(reloader: &reload::Reloader) {
    #[cfg(unix)]
    {
        use http::admin::Reload;
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the settings");
                    // The outcome is logged and counted by the reload itself.
                    let _ = reloader.reload().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod listen_tests {
    use super::listen;
    use std::time::Duration;

    /// Connects `n` clients at once to a listener nobody accepts on; answers how many got in
    /// before the kernel's first SYN retransmit (1 s) would have been needed.
    async fn burst(addr: std::net::SocketAddr, n: usize) -> usize {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                tokio::spawn(async move {
                    tokio::time::timeout(
                        Duration::from_millis(900),
                        tokio::net::TcpStream::connect(addr),
                    )
                    .await
                })
            })
            .collect();
        let mut held = Vec::new();
        for t in tasks {
            if let Ok(Ok(Ok(s))) = t.await {
                held.push(s);
            }
        }
        held.len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_burst_beyond_the_std_default_backlog_is_queued_not_dropped() {
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        // std's bind queues 129; the kernel caps any backlog at somaxconn.
        let n = 400.min(somaxconn.saturating_sub(1));
        assert!(
            n > 129,
            "net.core.somaxconn = {somaxconn} is too low to test this"
        );
        let l = listen("127.0.0.1", 0, 1024).unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(
            burst(addr, n).await,
            n,
            "every connect of the burst is queued"
        );
        assert!(listen("no such host name.invalid", 0, 16).is_err());
    }
}
