//! The `paycore` binary: `serve` runs the service, `channel-sim` runs the channel simulator alone,
//! `ledger verify` reconciles the ledger of the settings' database (exit 1 on any failure),
//! `migrate` applies the storage schema.

use anyhow::Context;
use clap::{Parser, Subcommand};
use paycore::actors::ledger_verify::{self, VerifyLimits};
use paycore::app::Application;
use paycore::config::Settings;
use paycore::storage::OrderStore;
use paycore::storage::backend::Backend;
use paycore::storage::sqlite::SqliteStore;
use std::sync::Arc;

/// mimalloc instead of glibc malloc: under load glibc's allocator was a fifth of paycore's CPU
/// (see ARCHITECTURE.md, "Dependencies").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "paycore", version, about = "Payment core for utilities")]
struct Cli {
    /// Settings file; environment variables PAYCORE_* override it. A file named here must
    /// exist; without the flag, ./config.toml is read when present, else built-in defaults.
    #[arg(long, global = true)]
    config: Option<String>,
    /// Log format: text or json. The level comes from RUST_LOG (default info).
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the payment core (and, by default, the channel simulator in-process).
    Serve,
    /// Run only the simulators (channel and business system), from the [simulator] settings.
    ChannelSim,
    /// The event log's consumers (works beside a running `serve`, on the same database).
    #[command(subcommand)]
    Log(LogCommand),
    /// Applies the storage schema's migrations not applied yet and exits: for `sqlite` the
    /// database file's, for `scylla` the keyspace's (made when missing).
    Migrate,
    /// The double-entry ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Every registered consumer cursor with its lag behind the log's head.
    Consumers,
    /// Removes a consumer's cursor, so it no longer holds the outbox purge (an external
    /// consumer that is gone for good). A paycore consumer registers again at its next start.
    Drop {
        /// The consumer's name.
        name: String,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Reconcile the ledger of the configured backend ([storage]): balanced transactions, no
    /// orphan postings, holds resolved at most once, balances equal to their postings, and
    /// every order's postings against its state. Exit 0 when it passes, 1 listing failures.
    Verify {
        /// Most failures (and not-yet-booked orders) listed; all are counted.
        #[arg(long, default_value_t = 1000)]
        max_listed: usize,
    },
}

async fn log_command(settings: &Settings, cmd: LogCommand) -> anyhow::Result<()> {
    let metrics = std::sync::Arc::new(paycore::metrics::Metrics::new());
    let store = Backend::open_reader(&settings.storage, metrics)
        .await
        .context("opening storage")?
        .orders;
    let result = async {
        match cmd {
            LogCommand::Consumers => {
                let (cursors, heads) = store.cursors().await?;
                let partitions = heads.len() as u32;
                for (p, head) in heads.iter().enumerate() {
                    println!("head {p}\t{head}");
                }
                for (name, at) in cursors {
                    let head = heads.get(at.partition as usize).copied().unwrap_or(0);
                    let task =
                        paycore::streams::consumer::task_name(&name, at.partition, partitions);
                    println!("{task}\tcursor {}\tlag {}", at.seq, store.lag(at.seq, head));
                }
            }
            LogCommand::Drop { name } => {
                let (cursors, _) = store.cursors().await?;
                anyhow::ensure!(
                    cursors.iter().any(|(n, _)| *n == name),
                    "no consumer named {name:?} is registered"
                );
                store.drop_cursor(&name).await?;
                println!("dropped {name}");
            }
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    result
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    if settings.storage.backend == "scylla" {
        let s = &settings.storage.scylla;
        let applied = paycore::storage::scylla::ScyllaStore::migrate(s)
            .await
            .with_context(|| {
                format!(
                    "migrating keyspace {} at {:?}",
                    s.keyspace, s.contact_points
                )
            })?;
        println!("keyspace {}: applied {applied:?}", s.keyspace);
    } else {
        // SQLite applies its migrations when the file is opened.
        let metrics = Arc::new(paycore::metrics::Metrics::new());
        let store =
            SqliteStore::open(&settings.storage.sqlite, metrics).context("opening the database")?;
        store.close().await;
        println!("database {}: migrated", settings.storage.sqlite.path);
    }
    Ok(())
}

fn init_logging(format: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The settings file to read: the one named (which must then exist), or ./config.toml when it
/// is there.
fn settings_file(named: Option<String>) -> Option<String> {
    named.or_else(|| {
        let default = DEFAULT_CONFIG.to_string();
        if std::path::Path::new(&default).exists() {
            Some(default)
        } else {
            tracing::warn!(
                path = DEFAULT_CONFIG,
                "no settings file; using built-in defaults"
            );
            None
        }
    })
}

/// Waits for ctrl-c or SIGTERM (a container's stop).
async fn until_stopped() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Read when `--config` is not given and it exists.
const DEFAULT_CONFIG: &str = "config.toml";

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    init_logging(&cli.log_format);
    let file = settings_file(cli.config.take());
    let settings = Settings::load(file.as_deref(), std::env::vars()).context("loading settings")?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.server.runtime_threads())
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(cli, file, settings))
}

async fn run(cli: Cli, file: Option<String>, settings: Settings) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => {
            let app = Application::build(settings).await?.reload_from(file);
            if let Some(url) = app.simulator_url() {
                tracing::info!(url, "channel simulator running in-process");
            }
            if let Some(url) = app.biller_simulator_url() {
                tracing::info!(url, "business-system simulator running in-process");
            }
            app.run_until_signalled().await;
        }
        Command::Log(cmd) => log_command(&settings, cmd).await?,
        Command::Migrate => migrate(&settings).await?,
        Command::ChannelSim => {
            let s = &settings.simulator;
            let listener = std::net::TcpListener::bind((s.bind.as_str(), s.port))
                .context("binding the simulator")?;
            let sim = paycore_channel_sim::start(s.behaviour.clone(), listener)?;
            tracing::info!(url = sim.base_url(), "channel simulator listening");
            let listener = std::net::TcpListener::bind((s.bind.as_str(), s.biller_port))
                .context("binding the business-system simulator")?;
            let biller = paycore_biller_sim::start(s.biller.clone(), listener)?;
            tracing::info!(
                url = biller.base_url(),
                "business-system simulator listening"
            );
            until_stopped().await;
            sim.stop().await;
            biller.stop().await;
        }
        Command::Ledger {
            command: LedgerCommand::Verify { max_listed },
        } => {
            let path = &settings.storage.sqlite.path;
            anyhow::ensure!(
                settings.storage.backend != "sqlite" || std::path::Path::new(path).exists(),
                "no database at {path} (storage.sqlite.path)"
            );
            let metrics = Arc::new(paycore::metrics::Metrics::new());
            let backend = Backend::open_reader(&settings.storage, metrics)
                .await
                .context("opening storage")?;
            let limits = VerifyLimits {
                max_listed,
                ..VerifyLimits::default()
            };
            let report =
                ledger_verify::verify(backend.orders.as_ref(), backend.ledger.as_ref(), limits)
                    .await;
            backend.orders.close().await;
            let report = report.context("reading the ledger")?;
            print!("{report}");
            if !report.passed() {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
