//! `[stream.kafka]`: the broker connection shared by the event producer (`stream.kind =
//! "kafka"`) and the command consumer (`[stream.kafka.commands] enabled = true`), their topics and
//! their bounds. Every librdkafka property paycore relies on for its guarantees (idempotence,
//! acks, manual offset storing) is set by paycore and refused in `properties`.

use super::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// `security.protocol` values librdkafka takes.
pub const SECURITY_PROTOCOLS: &[&str] = &["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
/// SASL mechanisms this build supports (librdkafka's built-in ones; GSSAPI/Kerberos needs
/// Cyrus SASL, which this build leaves out).
pub const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];
/// Properties paycore sets itself: its delivery and offset guarantees depend on them.
pub const RESERVED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "enable.auto.offset.store",
    "enable.auto.commit",
    "group.id",
    "transactional.id",
    "isolation.level",
];
/// Longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// The broker connection, the event topic and the producer's bounds.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// `client.id` (the command consumer appends `-commands`).
    pub client_id: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: String,
    /// With SASL: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; empty without SASL.
    pub sasl_mechanism: String,
    /// SASL user name.
    pub sasl_username: String,
    /// SASL password (never printed).
    pub sasl_password: Secret,
    /// CA certificate file (PEM) the brokers' certificates are checked against; empty: the
    /// system's CA store.
    pub ssl_ca_location: String,
    /// Client certificate file (PEM) for mutual TLS; empty: none.
    pub ssl_certificate_location: String,
    /// Client private key file (PEM) for mutual TLS; empty: none.
    pub ssl_key_location: String,
    /// The topic events go to, keyed by order id.
    pub events_topic: String,
    /// How long the producer tries to deliver a message before it reports it failed
    /// (`message.timeout.ms`); the relay then retries from its cursor.
    pub message_timeout_ms: u64,
    /// Messages the producer holds unacknowledged at most (`queue.buffering.max.messages`).
    pub queue_max_messages: u32,
    /// Bytes the producer holds unacknowledged at most, in KiB (`queue.buffering.max.kbytes`).
    pub queue_max_kbytes: u32,
    /// Longest a message waits to be batched (`linger.ms`).
    pub linger_ms: u64,
    /// Most messages in one produce request (`batch.num.messages`).
    pub batch_max_messages: u32,
    /// Timeout of the metadata request `/readyz` makes.
    pub metadata_timeout_ms: u64,
    /// The command consumer.
    pub commands: KafkaCommandSettings,
    /// Further librdkafka properties, passed through as they are (see librdkafka's
    /// CONFIGURATION.md); those in `RESERVED_PROPERTIES` are refused.
    pub properties: BTreeMap<String, String>,
}

/// The command consumer: topics, group, bounds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaCommandSettings {
    /// Consume commands at all.
    pub enabled: bool,
    /// Where gateways send commands.
    pub topic: String,
    /// Where replies go, keyed by `request_id`.
    pub replies_topic: String,
    /// Where messages go that cannot be answered (no readable `request_id`).
    pub dlq_topic: String,
    /// Consumer group.
    pub group_id: String,
    /// Most commands of one partition being handled at once; at the bound the partition is
    /// paused until half of them finished (each pause drops the partition's fetched messages,
    /// fetched again on resume). The default is `max_in_flight`: one partition may take every
    /// slot; lower it to keep slots for the others.
    pub max_in_flight_per_partition: usize,
    /// Most commands being handled at once over all partitions; at the bound no message is
    /// taken (they wait in the fetch queue) until one finishes, and every partition is paused
    /// when none finished for 500 ms.
    pub max_in_flight: usize,
    /// Largest command message; a larger one is answered `body_too_large`.
    pub max_message_bytes: usize,
    /// Bytes of fetched messages the consumer holds ahead of the commands, in KiB
    /// (`queued.max.messages.kbytes`).
    pub fetch_queue_kbytes: u32,
    /// How often stored offsets are committed (`auto.commit.interval.ms`).
    pub commit_interval_ms: u64,
    /// Pause before a command refused by saturated storage is tried again (its partition
    /// stays paused meanwhile).
    pub overload_retry_ms: u64,
    /// At shutdown, how long commands in flight may take to finish (their replies included).
    pub drain_timeout_ms: u64,
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Property values may hold secrets (`ssl.key.password`, `sasl.oauthbearer.config`):
        // only their names print.
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("client_id", &self.client_id)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &self.sasl_password)
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("ssl_certificate_location", &self.ssl_certificate_location)
            .field("ssl_key_location", &self.ssl_key_location)
            .field("events_topic", &self.events_topic)
            .field("message_timeout_ms", &self.message_timeout_ms)
            .field("queue_max_messages", &self.queue_max_messages)
            .field("queue_max_kbytes", &self.queue_max_kbytes)
            .field("linger_ms", &self.linger_ms)
            .field("batch_max_messages", &self.batch_max_messages)
            .field("metadata_timeout_ms", &self.metadata_timeout_ms)
            .field("commands", &self.commands)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            client_id: "paycore".into(),
            security_protocol: "plaintext".into(),
            sasl_mechanism: String::new(),
            sasl_username: String::new(),
            sasl_password: Secret::new(""),
            ssl_ca_location: String::new(),
            ssl_certificate_location: String::new(),
            ssl_key_location: String::new(),
            events_topic: "paycore.order-events".into(),
            message_timeout_ms: 30_000,
            queue_max_messages: 100_000,
            queue_max_kbytes: 65_536,
            linger_ms: 5,
            batch_max_messages: 10_000,
            metadata_timeout_ms: 2_000,
            commands: KafkaCommandSettings::default(),
            properties: BTreeMap::new(),
        }
    }
}

impl Default for KafkaCommandSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            topic: "paycore.commands".into(),
            replies_topic: "paycore.replies".into(),
            dlq_topic: "paycore.commands.dlq".into(),
            group_id: "paycore".into(),
            max_in_flight_per_partition: 4_096,
            max_in_flight: 4_096,
            max_message_bytes: 64 * 1024,
            fetch_queue_kbytes: 16_384,
            commit_interval_ms: 1_000,
            overload_retry_ms: 200,
            drain_timeout_ms: 30_000,
        }
    }
}

/// Kafka's rule for topic names: 1..=249 of `[A-Za-z0-9._-]`, not `.` or `..`.
fn valid_topic(t: &str) -> bool {
    (1..=MAX_TOPIC_LEN).contains(&t.len())
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl KafkaSettings {
    /// Checks the settings; `Err((key under stream.kafka, why))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, why: &str| Err((k.to_string(), why.to_string()));
        if self.bootstrap_servers.trim().is_empty() {
            return bad("bootstrap_servers", "must name at least one host:port");
        }
        if !SECURITY_PROTOCOLS.contains(&self.security_protocol.as_str()) {
            return bad(
                "security_protocol",
                "must be one of plaintext, ssl, sasl_plaintext, sasl_ssl",
            );
        }
        let sasl = self.security_protocol.starts_with("sasl_");
        if sasl {
            if self.sasl_mechanism.eq_ignore_ascii_case("GSSAPI") {
                return bad(
                    "sasl_mechanism",
                    "GSSAPI (Kerberos) is not built into this paycore; use PLAIN or SCRAM-SHA-256/512",
                );
            }
            if !SASL_MECHANISMS.contains(&self.sasl_mechanism.as_str()) {
                return bad(
                    "sasl_mechanism",
                    "must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 with a sasl_ protocol",
                );
            }
            if self.sasl_username.is_empty() || self.sasl_password.expose().is_empty() {
                return bad(
                    "sasl_username",
                    "SASL needs sasl_username and sasl_password",
                );
            }
        } else if !self.sasl_mechanism.is_empty() {
            return bad(
                "sasl_mechanism",
                "set only with security_protocol sasl_plaintext or sasl_ssl",
            );
        }
        if self.ssl_certificate_location.is_empty() != self.ssl_key_location.is_empty() {
            return bad(
                "ssl_key_location",
                "ssl_certificate_location and ssl_key_location go together",
            );
        }
        let c = &self.commands;
        for (key, topic) in [
            ("events_topic", &self.events_topic),
            ("commands.topic", &c.topic),
            ("commands.replies_topic", &c.replies_topic),
            ("commands.dlq_topic", &c.dlq_topic),
        ] {
            if !valid_topic(topic) {
                return bad(key, "must be 1..=249 of [A-Za-z0-9._-]");
            }
        }
        if c.topic == c.replies_topic || c.topic == c.dlq_topic || c.topic == self.events_topic {
            return bad(
                "commands.topic",
                "must differ from the replies, dead-letter and events topics",
            );
        }
        if self.message_timeout_ms == 0
            || self.queue_max_messages == 0
            || self.queue_max_kbytes == 0
            || self.batch_max_messages == 0
            || self.metadata_timeout_ms == 0
        {
            return bad(
                "message_timeout_ms",
                "message_timeout_ms, queue_max_messages, queue_max_kbytes, batch_max_messages and metadata_timeout_ms must be positive",
            );
        }
        if c.group_id.is_empty() {
            return bad("commands.group_id", "must not be empty");
        }
        if c.max_in_flight == 0
            || c.max_in_flight_per_partition == 0
            || c.max_message_bytes == 0
            || c.fetch_queue_kbytes == 0
            || c.commit_interval_ms == 0
            || c.overload_retry_ms == 0
            || c.drain_timeout_ms == 0
        {
            return bad("commands", "every bound must be positive");
        }
        if let Some(k) = self
            .properties
            .keys()
            .find(|k| RESERVED_PROPERTIES.contains(&k.as_str()))
        {
            return bad(
                &format!("properties.{k}"),
                "is set by paycore (its delivery guarantees depend on it); use the named setting",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: impl FnOnce(&mut KafkaSettings)) -> Result<(), String> {
        let mut s = KafkaSettings::default();
        f(&mut s);
        s.validate().map_err(|(k, _)| k)
    }

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        assert_eq!(check(|_| {}), Ok(()));
        assert_eq!(
            check(|s| s.bootstrap_servers = " ".into()),
            Err("bootstrap_servers".into())
        );
        assert_eq!(
            check(|s| s.security_protocol = "SSL3".into()),
            Err("security_protocol".into())
        );
        assert_eq!(
            check(|s| {
                s.security_protocol = "sasl_ssl".into();
                s.sasl_mechanism = "GSSAPI".into();
            }),
            Err("sasl_mechanism".into())
        );
        assert_eq!(
            check(|s| {
                s.security_protocol = "sasl_ssl".into();
                s.sasl_mechanism = "SCRAM-SHA-512".into();
            }),
            Err("sasl_username".into())
        );
        assert_eq!(
            check(|s| {
                s.security_protocol = "sasl_ssl".into();
                s.sasl_mechanism = "SCRAM-SHA-512".into();
                s.sasl_username = "paycore".into();
                s.sasl_password = Secret::new("pw");
            }),
            Ok(())
        );
        assert_eq!(
            check(|s| s.sasl_mechanism = "PLAIN".into()),
            Err("sasl_mechanism".into())
        );
        assert_eq!(
            check(|s| s.ssl_certificate_location = "/c.pem".into()),
            Err("ssl_key_location".into())
        );
        assert_eq!(
            check(|s| s.events_topic = "bad topic".into()),
            Err("events_topic".into())
        );
        assert_eq!(
            check(|s| s.commands.replies_topic = s.commands.topic.clone()),
            Err("commands.topic".into())
        );
        assert_eq!(
            check(|s| s.commands.max_in_flight = 0),
            Err("commands".into())
        );
        assert_eq!(
            check(|s| {
                s.properties
                    .insert("enable.idempotence".into(), "false".into());
            }),
            Err("properties.enable.idempotence".into())
        );
        assert_eq!(
            check(|s| {
                s.properties.insert("compression.type".into(), "lz4".into());
            }),
            Ok(())
        );
    }

    #[test]
    fn property_values_and_the_password_do_not_print() {
        let mut s = KafkaSettings {
            sasl_password: Secret::new("hunter2-password"),
            ..Default::default()
        };
        s.properties
            .insert("ssl.key.password".into(), "key-secret-value".into());
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2-password"), "{dbg}");
        assert!(!dbg.contains("key-secret-value"), "{dbg}");
        assert!(dbg.contains("ssl.key.password"), "{dbg}");
    }
}
