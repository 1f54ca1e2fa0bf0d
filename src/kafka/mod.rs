//! Kafka in: upstream gateways send create, pay, close and refund commands to a topic instead
//! of HTTP; each is run through the same operation as its HTTP route (`http::operations`) and
//! answered on a reply topic with the status and body the HTTP call would have answered. An
//! ingress like `http/`: it authenticates (a configured merchant; the broker's ACLs guard the
//! topic), frames and answers, and holds no business rule. `command` is the pure codec,
//! `offsets` the commit bookkeeping, `handler` one command, `consumer` the group member and
//! its supervision. The contract: docs/KAFKA.md.

pub mod command;
pub mod consumer;
mod handler;
pub mod offsets;

pub use handler::headers;

use crate::config::KafkaSettings;
use crate::http::auth::Authenticator;
use crate::http::operations::Operations;
use crate::metrics::Metrics;
use crate::storage::CommandStore;
use crate::streams::consumer::{Health, supervise};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the command consumer needs from the rest of paycore.
#[derive(Clone)]
pub struct CommandDeps {
    /// The operations HTTP runs too.
    pub operations: Operations,
    /// The configured merchants and their rate limits.
    pub auth: Arc<Authenticator>,
    /// Stored replies.
    pub replies: Arc<dyn CommandStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// The supervised task's name (in `/readyz` and `paycore_stream_task_restarts_total`).
pub const TASK: &str = "kafka-commands";

/// Starts the command consumer under the stream supervisor (a failed session is started again
/// with its back-off); it returns once `shutdown` turned true and its commands in flight
/// finished and their offsets were committed.
pub fn spawn(
    deps: CommandDeps,
    settings: KafkaSettings,
    health: Health,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let metrics = deps.metrics.clone();
    let stop = shutdown.clone();
    supervise(TASK, health, metrics, shutdown, move || {
        consumer::session(deps.clone(), settings.clone(), stop.clone())
    })
}
