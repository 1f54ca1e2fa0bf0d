//! One command message, start to finish: decode it; answer a copy of an answered command with
//! its stored reply; run a new one through the same operation the HTTP route runs; store a
//! final answer; produce the reply and wait for the broker's acknowledgement. Only then is the
//! message done, and its offset may be committed. Saturated or failing storage is waited out
//! (the partition paused meanwhile), never answered: the command stays in Kafka, not in memory.

use super::command::{self, Command, CommandKind, DeadReason, Decoded, Reply};
use crate::actors::CommandKey;
use crate::http::auth::{AuthedMerchant, Authenticator};
use crate::http::error::ApiError;
use crate::http::operations::{Answer, Operations};
use crate::metrics::Metrics;
use crate::storage::{CommandReply, CommandStore, StoreError};
use actix_web::http::StatusCode;
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Pause before a reply or dead letter the broker did not take is produced again.
const PRODUCE_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Longest a reply waits for room in the producer's queue before that counts as a failure.
const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Header names of replies and dead letters (see docs/KAFKA.md).
pub mod headers {
    /// The command's `request_id` (replies).
    pub const REQUEST_ID: &str = "paycore-request-id";
    /// The answer's HTTP status, decimal (replies).
    pub const STATUS: &str = "paycore-status";
    /// `true` when the reply is a stored one sent again for a copy of the command (replies).
    pub const REPLAYED: &str = "paycore-replayed";
    /// Why the message is a dead letter.
    pub const DLQ_REASON: &str = "paycore-dlq-reason";
    /// Topic, partition and offset the dead letter was read from.
    pub const SOURCE_TOPIC: &str = "paycore-source-topic";
    /// See `SOURCE_TOPIC`.
    pub const SOURCE_PARTITION: &str = "paycore-source-partition";
    /// See `SOURCE_TOPIC`.
    pub const SOURCE_OFFSET: &str = "paycore-source-offset";
}

/// A partition's back-pressure signal: storage refused a command of it (`true`) or took it
/// again (`false`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Pressure {
    pub partition: i32,
    pub epoch: u64,
    pub on: bool,
}

/// Sends a task's back-pressure signals to the consumer loop.
#[derive(Clone)]
pub(super) struct PressureTx {
    pub tx: mpsc::Sender<Pressure>,
    pub partition: i32,
    pub epoch: u64,
}

impl PressureTx {
    async fn set(&self, on: bool) {
        // The loop outlives its tasks; a send fails only once it is gone, and then nobody is
        // left to pause anything.
        let _ = self
            .tx
            .send(Pressure {
                partition: self.partition,
                epoch: self.epoch,
                on,
            })
            .await;
    }
}

/// What a command needs, shared by every command of a session.
pub(super) struct Handler {
    pub operations: Operations,
    pub auth: Arc<Authenticator>,
    pub replies: Arc<dyn CommandStore>,
    pub producer: FutureProducer,
    pub replies_topic: String,
    pub dlq_topic: String,
    pub max_bytes: usize,
    pub overload_retry: Duration,
    pub metrics: Arc<Metrics>,
}

/// The answers that are stored: 2xx and 4xx, except a rate limit and a concurrent update
/// (the same command may succeed a moment later). 5xx answers (a channel that did not answer,
/// an actor that timed out) are sent but not stored: a copy of the command runs again, and
/// the domain's own idempotency (the order's state, the refund number) decides its effect.
fn is_final(status: u16, code: Option<&str>) -> bool {
    (200..500).contains(&status) && status != 429 && code != Some("concurrent_update")
}

/// Answers that mean storage is saturated or failing: waited out, never answered.
fn is_storage_pressure(e: &ApiError) -> bool {
    matches!(e.code(), "overloaded" | "storage_unavailable")
}

fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["error"]["code"].as_str().map(str::to_string)
}

impl Handler {
    /// Handles one message; answers once it is done (its reply or dead letter acknowledged).
    /// A task cut off at shutdown simply never answers: its offset is not committed.
    pub async fn handle(&self, msg: &OwnedMessage, pressure: &PressureTx) {
        let payload = msg.payload().unwrap_or_default();
        match command::decode(payload, self.max_bytes) {
            Decoded::Dead(reason) => {
                self.dead_letter(msg, reason).await;
                self.count(None, "dead_lettered");
                self.metrics
                    .kafka
                    .dead_letters
                    .with_label_values(&[reason.as_str()])
                    .inc();
            }
            Decoded::Refused {
                request_id,
                merchant_id,
                kind,
                error,
            } => {
                self.count(kind, "refused");
                self.send(&Reply::error(&request_id, merchant_id, kind, &error), false)
                    .await;
            }
            Decoded::Command(c) => self.run(c, pressure).await,
        }
    }

    async fn run(&self, c: Command, pressure: &PressureTx) {
        let refuse = |e: &ApiError| {
            Reply::error(&c.request_id, Some(c.merchant_id.clone()), Some(c.kind), e)
        };
        let merchant = match self.auth.trusted(&c.merchant_id) {
            Ok(m) => m,
            Err(e) => {
                self.count(Some(c.kind), "refused");
                return self.send(&refuse(&e), false).await;
            }
        };
        // A create's stored reply is checked in the same write as its order (a copy is refused
        // there, `already_answered`), so the lookup waits until a create has an answer other
        // than its order; every other command looks first.
        let is_create = c.kind == CommandKind::Create;
        if !is_create && let Some(stored) = self.stored(pressure, &merchant, &c).await {
            return self.answer_stored(&c, &stored).await;
        }
        if let Err(e) = self.auth.admit(&merchant) {
            if is_create && let Some(stored) = self.stored(pressure, &merchant, &c).await {
                return self.answer_stored(&c, &stored).await;
            }
            self.count(Some(c.kind), "refused");
            return self.send(&refuse(&e), false).await;
        }
        let mut pressed = false;
        let outcome = loop {
            match self.execute(&merchant, &c).await {
                Err(e) if is_storage_pressure(&e) => {
                    if !pressed {
                        pressure.set(true).await;
                        pressed = true;
                    }
                    tokio::time::sleep(self.overload_retry).await;
                }
                other => break other,
            }
        };
        if pressed {
            pressure.set(false).await;
        }
        if !matches!(&outcome, Err(e) if e.code() == "already_answered") {
            self.count(Some(c.kind), "executed");
        }
        let (status, body, retry_after) = match outcome {
            // A created order's reply was stored with it, byte for byte this answer.
            Ok(a) if c.kind == CommandKind::Create => {
                return self
                    .send(&self.reply(&c, a.status.as_u16(), a.body, None), false)
                    .await;
            }
            // A pay, close or refund that changed its order stored its reply with the change:
            // that stored reply is the answer, byte for byte. One that changed nothing (a
            // repeat while PAYING, a close of a closed order) stores its answer below.
            Ok(Answer { status, body }) => match self.stored(pressure, &merchant, &c).await {
                Some(s) if s.command_hash == c.hash => {
                    return self
                        .send(&self.reply(&c, s.status, s.body, None), false)
                        .await;
                }
                Some(s) => return self.answer_stored(&c, &s).await,
                None => (status.as_u16(), body, None),
            },
            // A copy of this create ran first and stored its reply: that is the answer.
            Err(e) if e.code() == "already_answered" => {
                return match self.stored(pressure, &merchant, &c).await {
                    Some(s) => self.answer_stored(&c, &s).await,
                    None => {
                        tracing::error!(request_id = %c.request_id, "answered command has no stored reply");
                        self.send(&refuse(&e), false).await
                    }
                };
            }
            Err(e) => {
                // A copy of a create answered with an error has that error as its reply.
                if is_create && let Some(stored) = self.stored(pressure, &merchant, &c).await {
                    return self.answer_stored(&c, &stored).await;
                }
                (e.status().as_u16(), e.body_bytes(), e.retry_after_secs())
            }
        };
        let code = error_code(&body);
        if !is_final(status, code.as_deref()) {
            return self
                .send(&self.reply(&c, status, body, retry_after), false)
                .await;
        }
        let record = CommandReply {
            merchant_id: merchant.id.clone(),
            request_id: c.request_id.clone(),
            command_hash: c.hash.clone(),
            status,
            body,
            order_id: c
                .order_id
                .as_deref()
                .and_then(|o| crate::domain::OrderId::parse(o).ok()),
            created_at: time::OffsetDateTime::now_utc(),
        };
        let stored = self
            .storage(pressure, || {
                self.replies.store_command_reply(record.clone())
            })
            .await;
        if stored.command_hash != c.hash {
            // Another command with this request id was stored first (a concurrent copy).
            return self.answer_stored(&c, &stored).await;
        }
        self.send(&self.reply(&c, stored.status, stored.body, None), false)
            .await
    }

    async fn execute(&self, merchant: &AuthedMerchant, c: &Command) -> Result<Answer, ApiError> {
        let order_id = c.order_id.as_deref().unwrap_or_default();
        let key = CommandKey {
            request_id: c.request_id.clone(),
            command_hash: c.hash.clone(),
        };
        let ops = &self.operations;
        match c.kind {
            CommandKind::Create => ops.create_for_command(merchant, &c.body, key).await,
            CommandKind::Pay => ops.pay_for_command(merchant, order_id, &c.body, key).await,
            CommandKind::Close => ops.close_for_command(merchant, order_id, key).await,
            CommandKind::Refund => {
                ops.refund_for_command(merchant, order_id, &c.body, key)
                    .await
            }
        }
    }

    /// The reply stored for this command's request id, if any.
    async fn stored(
        &self,
        pressure: &PressureTx,
        merchant: &AuthedMerchant,
        c: &Command,
    ) -> Option<CommandReply> {
        self.storage(pressure, || {
            self.replies.command_reply(&merchant.id, &c.request_id)
        })
        .await
    }

    /// Sends the stored reply again for a copy of its command; a different command under the
    /// same request id is refused (409 `request_id_reused`) with no effect.
    async fn answer_stored(&self, c: &Command, stored: &CommandReply) {
        if stored.command_hash == c.hash {
            self.count(Some(c.kind), "replayed");
            let reply = self.reply(c, stored.status, stored.body.clone(), None);
            return self.send(&reply, true).await;
        }
        self.count(Some(c.kind), "request_id_reused");
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            "request_id_reused",
            "this request_id was used for another command; nothing was done",
        );
        e.set_field("request_id");
        let reply = Reply::error(&c.request_id, Some(c.merchant_id.clone()), Some(c.kind), &e);
        self.send(&reply, false).await
    }

    fn reply(&self, c: &Command, status: u16, body: Vec<u8>, retry_after: Option<u32>) -> Reply {
        Reply {
            request_id: c.request_id.to_string(),
            merchant_id: Some(c.merchant_id.clone()),
            command: Some(c.kind),
            status,
            retry_after_secs: retry_after,
            body,
        }
    }

    /// Runs a storage call until it succeeds, pausing the partition while storage refuses.
    async fn storage<T, F, Fut>(&self, pressure: &PressureTx, mut call: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut pressed = false;
        loop {
            match call().await {
                Ok(v) => {
                    if pressed {
                        pressure.set(false).await;
                    }
                    return v;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "command storage refused; partition paused, retrying");
                    if !pressed {
                        pressure.set(true).await;
                        pressed = true;
                    }
                    tokio::time::sleep(self.overload_retry).await;
                }
            }
        }
    }

    /// Produces a reply until the broker acknowledges it.
    async fn send(&self, reply: &Reply, replayed: bool) {
        let value = reply.encode();
        let status = reply.status.to_string();
        loop {
            let h = OwnedHeaders::new_with_capacity(4)
                .insert(Header {
                    key: headers::REQUEST_ID,
                    value: Some(reply.request_id.as_str()),
                })
                .insert(Header {
                    key: headers::STATUS,
                    value: Some(status.as_str()),
                })
                .insert(Header {
                    key: headers::REPLAYED,
                    value: Some(if replayed { "true" } else { "false" }),
                })
                .insert(Header {
                    key: "content-type",
                    value: Some("application/json"),
                });
            let record = FutureRecord::to(&self.replies_topic)
                .key(reply.request_id.as_str())
                .payload(&value)
                .headers(h);
            match self.producer.send(record, Timeout::After(QUEUE_WAIT)).await {
                Ok(_) => {
                    let class = match reply.status / 100 {
                        2 => "2xx",
                        4 => "4xx",
                        _ => "5xx",
                    };
                    self.metrics.kafka.replies.with_label_values(&[class]).inc();
                    return;
                }
                Err((e, _)) => {
                    tracing::warn!(error = %e, request_id = %reply.request_id, "reply not acknowledged; retrying");
                    tokio::time::sleep(PRODUCE_RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Produces the raw message to the dead-letter topic, with its headers and why, until the
    /// broker acknowledges it.
    async fn dead_letter(&self, msg: &OwnedMessage, reason: DeadReason) {
        let (partition, offset) = (msg.partition().to_string(), msg.offset().to_string());
        let payload = msg.payload().unwrap_or_default();
        loop {
            let mut h = OwnedHeaders::new();
            if let Some(original) = msg.headers() {
                for o in original.iter() {
                    h = h.insert(Header {
                        key: o.key,
                        value: o.value,
                    });
                }
            }
            let h = h
                .insert(Header {
                    key: headers::DLQ_REASON,
                    value: Some(reason.as_str()),
                })
                .insert(Header {
                    key: headers::SOURCE_TOPIC,
                    value: Some(msg.topic()),
                })
                .insert(Header {
                    key: headers::SOURCE_PARTITION,
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: headers::SOURCE_OFFSET,
                    value: Some(offset.as_str()),
                });
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.dlq_topic)
                .payload(payload)
                .headers(h);
            if let Some(key) = msg.key() {
                record = record.key(key);
            }
            match self.producer.send(record, Timeout::After(QUEUE_WAIT)).await {
                Ok(_) => return,
                Err((e, _)) => {
                    tracing::warn!(error = %e, reason = reason.as_str(), "dead letter not acknowledged; retrying");
                    tokio::time::sleep(PRODUCE_RETRY_PAUSE).await;
                }
            }
        }
    }

    fn count(&self, kind: Option<CommandKind>, outcome: &str) {
        let command = kind.map_or("unknown", CommandKind::as_str);
        self.metrics
            .kafka
            .commands
            .with_label_values(&[command, outcome])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_answers_are_2xx_and_4xx_but_rate_limits_and_conflicts() {
        assert!(is_final(201, None));
        assert!(is_final(202, None));
        assert!(is_final(409, Some("duplicate_order")));
        assert!(is_final(404, Some("order_not_found")));
        assert!(!is_final(429, Some("rate_limited")));
        assert!(!is_final(409, Some("concurrent_update")));
        assert!(!is_final(503, Some("channel_busy")));
        assert!(!is_final(502, Some("channel_unavailable")));
    }
}
