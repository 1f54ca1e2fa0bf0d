//! Kafka out: the relay's batches go to `stream.kafka.events_topic`, keyed by order id (so one
//! order's events share a partition and keep `version` order), through librdkafka's idempotent
//! producer with `acks=all`. `publish` answers `Ok` only once the broker acknowledged every
//! message of the batch; the relay moves its cursor only then, and retries from it otherwise.
//! This module also builds the client configuration both Kafka clients share (connection,
//! TLS, SASL, pass-through properties). It never decides what an event says: the bytes are
//! `streams::codec`'s, with the schema version in a header.

use super::{EventSink, StreamError, codec};
use crate::config::KafkaSettings;
use crate::storage::StoredEvent;
use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::time::Duration;

/// Header names of event messages (see docs/KAFKA.md).
pub mod headers {
    /// The event's id (consumers deduplicate by it).
    pub const EVENT_ID: &str = "paycore-event-id";
    /// The event's type, e.g. `order.paid`.
    pub const EVENT_TYPE: &str = "paycore-event-type";
    /// The order's version after the change, decimal.
    pub const ORDER_VERSION: &str = "paycore-order-version";
    /// The value's schema version (`streams::codec`), decimal.
    pub const SCHEMA: &str = "paycore-schema";
    /// The outbox partition the event was read from, decimal.
    pub const OUTBOX_PARTITION: &str = "paycore-outbox-partition";
    /// The event's position in that outbox partition, decimal.
    pub const OUTBOX_SEQ: &str = "paycore-outbox-seq";
    /// `application/json`.
    pub const CONTENT_TYPE: &str = "content-type";
}

/// The connection part of a client configuration: brokers, TLS, SASL. Each role adds its own
/// settings and then `with_properties`.
pub fn client_config(k: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.bootstrap_servers)
        .set("client.id", client_id)
        .set("security.protocol", &k.security_protocol);
    if !k.sasl_mechanism.is_empty() {
        c.set("sasl.mechanism", &k.sasl_mechanism)
            .set("sasl.username", &k.sasl_username)
            .set("sasl.password", k.sasl_password.expose());
    }
    for (key, value) in [
        ("ssl.ca.location", &k.ssl_ca_location),
        ("ssl.certificate.location", &k.ssl_certificate_location),
        ("ssl.key.location", &k.ssl_key_location),
    ] {
        if !value.is_empty() {
            c.set(key, value);
        }
    }
    c
}

/// Applies the pass-through properties last, so they win over paycore's defaults (the
/// reserved ones, which its guarantees depend on, are refused by the settings' validation).
pub fn with_properties(mut c: ClientConfig, k: &KafkaSettings) -> ClientConfig {
    for (key, value) in &k.properties {
        c.set(key, value);
    }
    c
}

/// A producer configuration: idempotent (no duplicates or reordering from its own retries),
/// every in-sync replica acknowledges, and the queue and batch bounds of the settings.
pub fn producer_config(k: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut c = client_config(k, client_id);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("message.timeout.ms", k.message_timeout_ms.to_string())
        .set(
            "queue.buffering.max.messages",
            k.queue_max_messages.to_string(),
        )
        .set("queue.buffering.max.kbytes", k.queue_max_kbytes.to_string())
        .set("linger.ms", k.linger_ms.to_string())
        .set("batch.num.messages", k.batch_max_messages.to_string())
        // The Java client's partitioner for keyed messages: an order id lands on the same
        // partition whichever client (or tool) computes it.
        .set("partitioner", "murmur2_random");
    with_properties(c, k)
}

/// Whether `topic` is known to the cluster with at least one partition, asked within
/// `timeout`. The metadata call blocks, so it runs off the async threads.
pub async fn topic_ready(producer: &FutureProducer, topic: &str, timeout: Duration) -> bool {
    let producer = producer.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        match producer.client().fetch_metadata(Some(&topic), timeout) {
            Ok(m) => m
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()),
            Err(e) => {
                tracing::warn!(error = %e, %topic, "kafka metadata request failed");
                false
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// The relay's sink when `stream.kind = "kafka"`.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    metadata_timeout: Duration,
}

impl KafkaSink {
    /// A sink producing to `k.events_topic` (the connection is made lazily by librdkafka; a
    /// configuration librdkafka refuses fails here).
    pub fn new(k: &KafkaSettings) -> Result<Self, StreamError> {
        let producer: FutureProducer = producer_config(k, &k.client_id)
            .create()
            .map_err(|e| StreamError(format!("kafka producer: {e}")))?;
        Ok(Self {
            producer,
            topic: k.events_topic.clone(),
            metadata_timeout: Duration::from_millis(k.metadata_timeout_ms),
        })
    }
}

/// The outbox has one partition until orders are sharded.
const OUTBOX_PARTITION: &str = "0";

fn event_headers(p: &StoredEvent) -> OwnedHeaders {
    let e = &p.event;
    let (version, seq, schema) = (
        e.version.to_string(),
        p.seq.to_string(),
        codec::SCHEMA_VERSION.to_string(),
    );
    OwnedHeaders::new_with_capacity(7)
        .insert(Header {
            key: headers::EVENT_ID,
            value: Some(e.event_id.as_str()),
        })
        .insert(Header {
            key: headers::EVENT_TYPE,
            value: Some(e.event_type.as_str()),
        })
        .insert(Header {
            key: headers::ORDER_VERSION,
            value: Some(version.as_str()),
        })
        .insert(Header {
            key: headers::SCHEMA,
            value: Some(schema.as_str()),
        })
        .insert(Header {
            key: headers::OUTBOX_PARTITION,
            value: Some(OUTBOX_PARTITION),
        })
        .insert(Header {
            key: headers::OUTBOX_SEQ,
            value: Some(seq.as_str()),
        })
        .insert(Header {
            key: headers::CONTENT_TYPE,
            value: Some(codec::CONTENT_TYPE),
        })
}

#[async_trait]
impl EventSink for KafkaSink {
    async fn publish(&self, events: &[StoredEvent]) -> Result<(), StreamError> {
        // Enqueue the whole batch (the producer pipelines it, in order), then wait for every
        // acknowledgement. A failure is reported only after every message of the batch has an
        // outcome, so a retry never overlaps messages of this batch still in flight.
        let mut deliveries = Vec::with_capacity(events.len());
        let mut failure = None;
        for p in events {
            // The value is the event at the codec's schema version: the outbox row as stored.
            let record = FutureRecord::to(&self.topic)
                .key(p.event.order_id.as_str())
                .payload(&p.encoded[..])
                .headers(event_headers(p));
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((e, _)) => {
                    // Queue full or a local error: the rest of the batch waits for the retry.
                    failure = Some(format!("kafka enqueue: {e}"));
                    break;
                }
            }
        }
        for d in deliveries {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    failure.get_or_insert_with(|| format!("kafka delivery: {e}"));
                }
                Err(_) => {
                    failure.get_or_insert_with(|| "kafka producer stopped".to_string());
                }
            }
        }
        match failure {
            None => Ok(()),
            Some(f) => Err(StreamError(f)),
        }
    }

    async fn ready(&self) -> bool {
        topic_ready(&self.producer, &self.topic, self.metadata_timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_config_carries_tls_sasl_and_pass_through_properties() {
        let mut k = KafkaSettings {
            security_protocol: "sasl_ssl".into(),
            sasl_mechanism: "SCRAM-SHA-256".into(),
            sasl_username: "paycore".into(),
            sasl_password: crate::config::Secret::new("pw"),
            ssl_ca_location: "/etc/ca.pem".into(),
            ..Default::default()
        };
        k.properties.insert("compression.type".into(), "lz4".into());
        let c = producer_config(&k, "paycore");
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(c.get("sasl.password"), Some("pw"));
        assert_eq!(c.get("ssl.ca.location"), Some("/etc/ca.pem"));
        assert_eq!(c.get("ssl.key.location"), None);
        assert_eq!(c.get("compression.type"), Some("lz4"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        // This build links OpenSSL: librdkafka takes a TLS + SCRAM configuration.
        assert!(c.create_native_config().is_ok());
    }
}
