//! Metrics of the Kafka command consumer. Labels are low-cardinality: the command kind, the
//! outcome, the status class, the dead-letter reason; never a request or order id.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The command consumer's metrics.
pub struct KafkaMetrics {
    /// `paycore_kafka_commands_total{command,outcome}`: outcome `executed` (the operation ran),
    /// `replayed` (a stored reply was sent again), `request_id_reused`, `refused` (answered
    /// with an error before the operation: malformed, unknown merchant, rate limited),
    /// `dead_lettered`, `abandoned` (shutdown came first; redelivered later).
    pub commands: IntCounterVec,
    /// `paycore_kafka_commands_in_flight`.
    pub in_flight: IntGauge,
    /// `paycore_kafka_paused_partitions`: partitions paused for back-pressure.
    pub paused_partitions: IntGauge,
    /// `paycore_kafka_partition_pauses_total`: times a partition was paused (at an in-flight
    /// bound, or while storage refused one of its commands).
    pub pauses: IntCounter,
    /// `paycore_kafka_replies_total{status}`: replies acknowledged by the broker, by class
    /// (`2xx`, `4xx`, `5xx`).
    pub replies: IntCounterVec,
    /// `paycore_kafka_dead_letters_total{reason}`.
    pub dead_letters: IntCounterVec,
    /// `paycore_kafka_consumer_lag_messages`: command-topic messages not consumed yet, summed
    /// over the partitions assigned to this process (librdkafka's statistics, every 5 s).
    pub consumer_lag: IntGauge,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure here is a programming error found at start-up.
    r.expect("static metric definition")
}

impl KafkaMetrics {
    /// Builds the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            must(IntCounterVec::new(Opts::new(name, help), labels))
        };
        let m = Self {
            commands: vec(
                "paycore_kafka_commands_total",
                "Kafka commands handled, by command and outcome",
                &["command", "outcome"],
            ),
            in_flight: must(IntGauge::new(
                "paycore_kafka_commands_in_flight",
                "Kafka commands being handled",
            )),
            paused_partitions: must(IntGauge::new(
                "paycore_kafka_paused_partitions",
                "Command partitions paused for back-pressure",
            )),
            pauses: must(IntCounter::new(
                "paycore_kafka_partition_pauses_total",
                "Times a command partition was paused for back-pressure",
            )),
            replies: vec(
                "paycore_kafka_replies_total",
                "Command replies acknowledged by the broker, by status class",
                &["status"],
            ),
            dead_letters: vec(
                "paycore_kafka_dead_letters_total",
                "Command messages sent to the dead-letter topic, by reason",
                &["reason"],
            ),
            consumer_lag: must(IntGauge::new(
                "paycore_kafka_consumer_lag_messages",
                "Command-topic messages not consumed yet, over the partitions assigned here",
            )),
        };
        must(registry.register(Box::new(m.commands.clone())));
        must(registry.register(Box::new(m.in_flight.clone())));
        must(registry.register(Box::new(m.paused_partitions.clone())));
        must(registry.register(Box::new(m.pauses.clone())));
        must(registry.register(Box::new(m.replies.clone())));
        must(registry.register(Box::new(m.dead_letters.clone())));
        must(registry.register(Box::new(m.consumer_lag.clone())));
        m
    }
}
