//! A simulator of a third-party payment channel (in the manner of WeChat Pay) spoken to over
//! signed HTTP: it creates payments, pays or fails them after a delay, calls the merchant
//! back (with retries, duplicates and losses), closes and refunds them, and lets anyone audit
//! what it charged. This module owns start-up and shutdown of one simulator instance.

mod callbacks;
mod ledger;
pub mod protocol;
mod server;
pub mod settings;

use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use governor::{Quota, RateLimiter};

pub use settings::SimSettings;

use crate::callbacks::Background;
use crate::ledger::Ledger;
use crate::server::AppState;

/// HTTP worker threads; the simulator's handlers are short, so one worker serves it all.
const HTTP_WORKERS: usize = 1;
/// Seconds a graceful stop waits for open connections before closing them.
const SHUTDOWN_TIMEOUT_SECS: u64 = 1;

/// A running simulator.
///
/// Call [`SimHandle::stop`] to end it: dropping the handle leaves it running until the
/// runtime it was started in shuts down.
pub struct SimHandle {
    addr: SocketAddr,
    server: ServerHandle,
    server_task: tokio::task::JoinHandle<std::io::Result<()>>,
    background: Arc<Background>,
}

impl SimHandle {
    /// Address the simulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of the simulator, e.g. "http://127.0.0.1:PORT".
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop of the HTTP server, then of pending pay timers and callback deliveries.
    pub async fn stop(self) {
        self.server.stop(true).await;
        match self.server_task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "simulator server ended with an error"),
            Err(err) => tracing::warn!(error = %err, "simulator server task failed"),
        }
        self.background.shutdown().await;
    }
}

/// Starts the simulator on an already-bound listener inside the current tokio runtime.
///
/// The HTTP server runs on actix-web's own worker thread(s); pay timers and callbacks run on
/// the calling runtime. No signal handlers are installed.
pub fn start(settings: SimSettings, listener: TcpListener) -> std::io::Result<SimHandle> {
    settings.validate().map_err(|err| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("sim settings: {err}"),
        )
    })?;
    let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let addr = listener.local_addr()?;
    let settings = Arc::new(settings);
    let ledger = Arc::new(Mutex::new(Ledger::new(settings.max_payments)));
    let background = Background::new(Arc::clone(&settings), Arc::clone(&ledger), runtime)?;
    let quota = Quota::per_second(nonzero(settings.qps, "qps")?)
        .allow_burst(nonzero(settings.burst, "burst")?);
    let state = web::Data::new(AppState {
        settings,
        ledger,
        limiter: RateLimiter::direct(quota),
        background: Arc::clone(&background),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(server::configure)
    })
    .workers(HTTP_WORKERS)
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let server_task = tokio::spawn(server);
    Ok(SimHandle {
        addr,
        server: handle,
        server_task,
        background,
    })
}

fn nonzero(value: u32, field: &str) -> std::io::Result<NonZeroU32> {
    NonZeroU32::new(value).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{field} must be > 0"),
        )
    })
}
