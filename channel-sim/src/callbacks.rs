//! Background work of the simulator: the pay timer of each new payment, which settles it
//! in the ledger, and the signed callback deliveries that follow, with retries, duplicates
//! and losses. Owns the set of spawned tasks so that stopping the simulator ends them all.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::ledger::{Ledger, Notice, Settlement};
use crate::protocol::{self, CallbackAck};
use crate::settings::SimSettings;

/// Longest wait between two callback attempts, however many retries preceded it.
const MAX_CALLBACK_BACKOFF: Duration = Duration::from_secs(300);
/// Largest acknowledgement body read from a callback receiver.
const MAX_ACK_BYTES: usize = 64 * 1024;
/// Failure reason recorded on PAYERROR payments.
const FAILURE_REASON: &str = "SIMULATED_FAILURE: the payer's payment did not go through";

/// Why one callback attempt did not end the delivery.
#[derive(Debug, Error)]
enum AttemptError {
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("receiver answered HTTP {0}")]
    Status(u16),
    #[error("acknowledgement over {MAX_ACK_BYTES} bytes")]
    AckTooLarge,
    #[error("acknowledgement is not JSON: {0}")]
    AckMalformed(#[from] serde_json::Error),
    #[error("receiver answered code {0:?}")]
    NotAcknowledged(String),
}

struct Tasks {
    set: JoinSet<()>,
    /// Set once at stop; later spawns are refused so nothing outlives the simulator.
    closed: bool,
}

/// Spawns and tracks pay timers and callback deliveries on the host runtime.
pub(crate) struct Background {
    runtime: tokio::runtime::Handle,
    tasks: Mutex<Tasks>,
    delivery_slots: Arc<Semaphore>,
    http: reqwest::Client,
    settings: Arc<SimSettings>,
    ledger: Arc<Mutex<Ledger>>,
}

/// Locks the ledger; a panic while holding it cannot leave a half-applied transition
/// (each one is a few assignments after all checks), so a poisoned lock is still usable.
pub(crate) fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Background {
    /// Background work spawned on `runtime`, settling payments in `ledger`.
    pub(crate) fn new(
        settings: Arc<SimSettings>,
        ledger: Arc<Mutex<Ledger>>,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Arc::new(Self {
            runtime,
            tasks: Mutex::new(Tasks {
                set: JoinSet::new(),
                closed: false,
            }),
            delivery_slots: Arc::new(Semaphore::new(settings.max_pending_callbacks)),
            http,
            settings,
            ledger,
        }))
    }

    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) -> bool {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        if tasks.closed {
            return false;
        }
        // Reap finished tasks so the set only holds live ones.
        while let Some(done) = tasks.set.try_join_next() {
            if let Err(err) = done {
                tracing::error!(error = %err, "simulator background task failed");
            }
        }
        tasks.set.spawn_on(work, &self.runtime);
        true
    }

    /// Starts the pay timer of a new payment; its result is then called back.
    pub(crate) fn schedule_payment(self: &Arc<Self>, out_trade_no: String, trade_no: String) {
        let this = Arc::clone(self);
        let logged_trade_no = trade_no.clone();
        let spawned = self.spawn(async move {
            let delay =
                rand::random_range(this.settings.pay_delay_ms_min..=this.settings.pay_delay_ms_max);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let outcome = if rand::random_bool(this.settings.fail_rate) {
                Settlement::Failure(FAILURE_REASON.to_owned())
            } else {
                Settlement::Success {
                    surcharge: i64::from(rand::random_bool(this.settings.wrong_amount_rate)),
                }
            };
            let paid = matches!(outcome, Settlement::Success { .. });
            let notice = lock(&this.ledger).settle(&out_trade_no, &trade_no, outcome);
            let settled = notice.is_some();
            if let Some(notice) = notice {
                this.dispatch(notice);
            }
            if paid && settled && rand::random_bool(this.settings.double_charge_rate) {
                let delay = rand::random_range(
                    this.settings.pay_delay_ms_min..=this.settings.pay_delay_ms_max,
                );
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let again = lock(&this.ledger).charge_again(&out_trade_no);
                if let Some(notice) = again {
                    this.dispatch(notice);
                }
            }
        });
        if !spawned {
            tracing::warn!(trade_no = %logged_trade_no, "simulator stopping: payment left NOTPAY");
        }
    }

    /// Sends a result as the channel would: maybe lost, maybe twice.
    fn dispatch(self: &Arc<Self>, notice: Notice) {
        let out_trade_no = &notice.body.out_trade_no;
        if rand::random_bool(self.settings.lost_callback_rate) {
            tracing::info!(%out_trade_no, "simulated lost callback: not sent");
            return;
        }
        let copies = if rand::random_bool(self.settings.duplicate_callback_rate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let Ok(slot) = Arc::clone(&self.delivery_slots).try_acquire_owned() else {
                tracing::warn!(
                    %out_trade_no,
                    max_pending_callbacks = self.settings.max_pending_callbacks,
                    "too many callbacks in flight: delivery dropped"
                );
                continue;
            };
            let this = Arc::clone(self);
            let body = notice.body.clone();
            let url = notice.notify_url.clone();
            if !self.spawn(async move { this.deliver(body, url, slot).await }) {
                tracing::warn!(%out_trade_no, "simulator stopping: callback not sent");
            }
        }
    }

    /// One delivery: attempts until acknowledged or out of retries. Holds its slot throughout.
    async fn deliver(
        self: Arc<Self>,
        body: protocol::CallbackBody,
        url: String,
        _slot: OwnedSemaphorePermit,
    ) {
        let payload = match serde_json::to_vec(&body) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::error!(error = %err, "callback body not serializable");
                return;
            }
        };
        let mut backoff = Duration::from_millis(self.settings.callback_retry_base_ms);
        let attempts = self.settings.callback_max_retries.saturating_add(1);
        for attempt in 1..=attempts {
            match self.attempt(&url, &payload).await {
                Ok(()) => {
                    tracing::debug!(event_id = %body.event_id, attempt, "callback acknowledged");
                    return;
                }
                Err(err) => {
                    tracing::debug!(event_id = %body.event_id, attempt, error = %err, "callback attempt failed");
                }
            }
            if attempt < attempts {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2).min(MAX_CALLBACK_BACKOFF);
            }
        }
        tracing::warn!(event_id = %body.event_id, %url, attempts, "callback never acknowledged");
    }

    async fn attempt(&self, url: &str, payload: &[u8]) -> Result<(), AttemptError> {
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = protocol::sign(self.settings.secret.as_bytes(), timestamp, payload);
        let mut response = self
            .http
            .post(url)
            .timeout(Duration::from_millis(self.settings.callback_timeout_ms))
            .header("content-type", "application/json")
            .header(protocol::TIMESTAMP_HEADER, timestamp.to_string())
            .header(protocol::SIGNATURE_HEADER, signature)
            .body(payload.to_vec())
            .send()
            .await?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(AttemptError::Status(response.status().as_u16()));
        }
        let mut ack = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if ack.len() + chunk.len() > MAX_ACK_BYTES {
                return Err(AttemptError::AckTooLarge);
            }
            ack.extend_from_slice(&chunk);
        }
        let ack: CallbackAck = serde_json::from_slice(&ack)?;
        if ack.code != "SUCCESS" {
            return Err(AttemptError::NotAcknowledged(ack.code));
        }
        Ok(())
    }

    /// Refuses new work, then cancels pay timers and deliveries and waits for them to end.
    pub(crate) async fn shutdown(&self) {
        let mut set = {
            let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
            tasks.closed = true;
            std::mem::take(&mut tasks.set)
        };
        set.shutdown().await;
    }
}
