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

/// Starts the supervised command consumer; it returns once `shutdown` turned true and its
/// commands in flight finished and their offsets were committed.
pub fn spawn(
    deps: CommandDeps,
    settings: KafkaSettings,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(consumer::supervise(deps, settings, shutdown))
}
