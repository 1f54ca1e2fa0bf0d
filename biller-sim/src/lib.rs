//! A simulator of a utility's business system (the "biller") spoken to over signed HTTP:
//! after an order is paid, paycore asks it to credit the customer's account (a write-off,
//! 销账), and for a refund to reverse that credit; anyone can audit what it credited. Faults
//! (transient, permanent, lost answers, refused reversals, latency) are injected by settings.
//! This module owns start-up and shutdown of one simulator instance.

mod ledger;
pub mod protocol;
mod server;
pub mod settings;

use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};

pub use settings::BillerSettings;

use crate::ledger::Ledger;
use crate::server::AppState;

/// HTTP worker threads; the biller's handlers are short, so one worker serves it all.
const HTTP_WORKERS: usize = 1;
/// Seconds a graceful stop waits for open connections before closing them.
const SHUTDOWN_TIMEOUT_SECS: u64 = 1;

/// A running biller simulator.
///
/// Call [`BillerHandle::stop`] to end it: dropping the handle leaves it running until the
/// runtime it was started in shuts down.
pub struct BillerHandle {
    addr: SocketAddr,
    server: ServerHandle,
    server_task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl BillerHandle {
    /// Address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of the simulator, e.g. "http://127.0.0.1:PORT".
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop: no new connections, open ones finish (or are closed after a second).
    pub async fn stop(self) {
        self.server.stop(true).await;
        match self.server_task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "biller simulator ended with an error"),
            Err(err) => tracing::warn!(error = %err, "biller simulator task failed"),
        }
    }
}

/// Starts the simulator on an already-bound listener inside the current tokio runtime.
///
/// Invalid settings answer an error of kind `InvalidInput` naming the field. The HTTP server
/// runs on actix-web's own worker thread; no signal handlers are installed.
pub fn start(settings: BillerSettings, listener: TcpListener) -> std::io::Result<BillerHandle> {
    settings.validate().map_err(|err| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("biller settings: {err}"),
        )
    })?;
    let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let addr = listener.local_addr()?;
    let ledger = Ledger::new(settings.max_records, rand::random());
    let state = web::Data::new(AppState {
        settings,
        ledger: Mutex::new(ledger),
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
    let server_task = runtime.spawn(server);
    Ok(BillerHandle {
        addr,
        server: handle,
        server_task,
    })
}
