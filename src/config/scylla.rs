//! `[storage.scylla]`: the CQL backend's cluster connection, keyspace and request bounds. The
//! same settings reach ScyllaDB and Apache Cassandra; `dialect` says which DDL the keyspace gets.

use super::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest keyspace name CQL accepts.
const MAX_KEYSPACE_LEN: usize = 48;

/// Which server speaks CQL: the keyspace DDL differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// ScyllaDB: the keyspace is made with tablets off, since LWT (the version check, the
    /// reservations) needs vnode-based replication there.
    Scylladb,
    /// Apache Cassandra (5.0 is what CI runs): no tablets option.
    Cassandra,
}

/// The consistency of reads and plain writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// A majority of all replicas.
    Quorum,
    /// A majority of the local datacenter's replicas.
    LocalQuorum,
    /// One replica (tests on one node only: a lost node can lose acknowledged writes).
    One,
}

/// The consistency of LWT's Paxos round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SerialConsistency {
    /// Linearizable across every datacenter.
    Serial,
    /// Linearizable within the local datacenter.
    LocalSerial,
}

/// The keyspace's replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Strategy {
    /// One datacenter, `replication_factor` copies (single-node tests, small clusters).
    SimpleStrategy,
    /// `datacenters` names each datacenter and its copies (production).
    NetworkTopologyStrategy,
}

/// CQL backend settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaSettings {
    /// `host:port` of nodes to reach the cluster through (the driver learns the rest).
    pub contact_points: Vec<String>,
    /// The datacenter whose nodes are asked first; empty: any.
    pub local_datacenter: String,
    /// `scylladb` or `cassandra`.
    pub dialect: Dialect,
    /// Keyspace holding paycore's tables (made by the migrations when missing).
    pub keyspace: String,
    /// `SimpleStrategy` or `NetworkTopologyStrategy`.
    pub replication_strategy: Strategy,
    /// Copies with `SimpleStrategy`.
    pub replication_factor: u32,
    /// Copies per datacenter with `NetworkTopologyStrategy`.
    pub datacenters: BTreeMap<String, u32>,
    /// Reads and plain writes.
    pub consistency: Consistency,
    /// LWT rounds.
    pub serial_consistency: SerialConsistency,
    /// User name (password authentication); empty: none.
    pub username: String,
    /// Password (never printed).
    pub password: Secret,
    /// CA certificate file (PEM) the nodes' certificates are checked against; empty: no TLS.
    pub tls_ca_file: String,
    /// Connecting to a node gives up after this.
    pub connect_timeout_ms: u64,
    /// One request (with the driver's retries) gives up after this.
    pub request_timeout_ms: u64,
    /// A create holds its token and merchant-number reservations this long at most: a create
    /// that has not stored its order by then gives up, and a later create may take over a
    /// reservation whose order was never stored (a crash between the steps). Longer than
    /// several request timeouts.
    pub reservation_lease_ms: u64,
    /// `paycore serve` holds the keyspace this long per renewal (renewed every sixth of it);
    /// a crashed holder's lease runs out after it, and a restart waits that long at most. At
    /// least three request timeouts: the holder fences itself two request timeouts before
    /// its lease may run out.
    pub owner_lease_ms: u64,
    /// Most LWT rounds one operation makes before it answers a backend error (contention on
    /// one reservation).
    pub max_lwt_rounds: u32,
    /// Kafka command replies live this long (their TTL), as `storage.event_retention_hours`
    /// keeps them on SQLite.
    pub reply_retention_hours: u32,
}

impl Default for ScyllaSettings {
    fn default() -> Self {
        Self {
            contact_points: vec!["127.0.0.1:9042".into()],
            local_datacenter: String::new(),
            dialect: Dialect::Scylladb,
            keyspace: "paycore".into(),
            replication_strategy: Strategy::SimpleStrategy,
            replication_factor: 1,
            datacenters: BTreeMap::new(),
            consistency: Consistency::Quorum,
            serial_consistency: SerialConsistency::Serial,
            username: String::new(),
            password: Secret::new(""),
            tls_ca_file: String::new(),
            connect_timeout_ms: 5_000,
            request_timeout_ms: 5_000,
            reservation_lease_ms: 30_000,
            owner_lease_ms: 30_000,
            max_lwt_rounds: 8,
            reply_retention_hours: 168,
        }
    }
}

impl ScyllaSettings {
    /// Checks the settings alone; answers the offending key and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, why: &str| Err((k.to_string(), why.to_string()));
        if self.contact_points.is_empty() || self.contact_points.iter().any(|c| c.trim().is_empty())
        {
            return bad(
                "contact_points",
                "must name at least one host:port, none empty",
            );
        }
        if !valid_identifier(&self.keyspace) {
            return bad(
                "keyspace",
                "must be 1 to 48 of a-z, 0-9 and _, starting with a letter",
            );
        }
        match self.replication_strategy {
            Strategy::SimpleStrategy if self.replication_factor == 0 => {
                return bad("replication_factor", "must be positive");
            }
            Strategy::NetworkTopologyStrategy
                if self.datacenters.is_empty()
                    || self
                        .datacenters
                        .iter()
                        .any(|(dc, n)| *n == 0 || !valid_datacenter(dc)) =>
            {
                return bad(
                    "datacenters",
                    "NetworkTopologyStrategy needs at least one datacenter (letters, digits, - and _) with a positive count",
                );
            }
            _ => {}
        }
        if self.username.is_empty() != self.password.expose().is_empty() {
            return bad("username", "username and password go together");
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return bad(
                "request_timeout_ms",
                "connect_timeout_ms and request_timeout_ms must be positive",
            );
        }
        if self.reservation_lease_ms < 2 * self.request_timeout_ms {
            return bad(
                "reservation_lease_ms",
                "must be at least twice request_timeout_ms (a create makes several requests)",
            );
        }
        if self.owner_lease_ms < 3 * self.request_timeout_ms || self.owner_lease_ms > 24 * 3_600_000
        {
            return bad(
                "owner_lease_ms",
                "must be at least three times request_timeout_ms, and at most 24 h",
            );
        }
        if !(1..=100).contains(&self.max_lwt_rounds) {
            return bad("max_lwt_rounds", "must be within 1..=100");
        }
        if !(1..=24 * 365).contains(&self.reply_retention_hours) {
            return bad("reply_retention_hours", "must be within 1..=8760 (a year)");
        }
        Ok(())
    }

    /// The keyspace's `replication` map, as CQL.
    pub fn replication_cql(&self) -> String {
        match self.replication_strategy {
            Strategy::SimpleStrategy => format!(
                "{{'class': 'SimpleStrategy', 'replication_factor': {}}}",
                self.replication_factor
            ),
            Strategy::NetworkTopologyStrategy => {
                let dcs: Vec<String> = self
                    .datacenters
                    .iter()
                    .map(|(dc, n)| format!("'{dc}': {n}"))
                    .collect();
                format!("{{'class': 'NetworkTopologyStrategy', {}}}", dcs.join(", "))
            }
        }
    }
}

fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= MAX_KEYSPACE_LEN
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn valid_datacenter(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_is_rendered_for_each_strategy() {
        let mut s = ScyllaSettings::default();
        assert_eq!(
            s.replication_cql(),
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
        s.replication_strategy = Strategy::NetworkTopologyStrategy;
        s.datacenters = [("dc1".to_string(), 3), ("dc2".to_string(), 2)].into();
        assert_eq!(
            s.replication_cql(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"
        );
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn bad_settings_are_refused_by_key() {
        let key = |f: &dyn Fn(&mut ScyllaSettings)| {
            let mut s = ScyllaSettings::default();
            f(&mut s);
            s.validate().err().map(|(k, _)| k)
        };
        assert_eq!(key(&|_| {}), None);
        assert_eq!(
            key(&|s| s.contact_points.clear()).as_deref(),
            Some("contact_points")
        );
        assert_eq!(
            key(&|s| s.keyspace = "Pay-core".into()).as_deref(),
            Some("keyspace")
        );
        assert_eq!(
            key(&|s| s.keyspace = "x; DROP TABLE y".into()).as_deref(),
            Some("keyspace")
        );
        assert_eq!(
            key(&|s| s.replication_strategy = Strategy::NetworkTopologyStrategy).as_deref(),
            Some("datacenters")
        );
        assert_eq!(
            key(&|s| {
                s.replication_strategy = Strategy::NetworkTopologyStrategy;
                s.datacenters = [("dc1'}; --".to_string(), 3)].into();
            })
            .as_deref(),
            Some("datacenters")
        );
        assert_eq!(
            key(&|s| s.username = "u".into()).as_deref(),
            Some("username")
        );
        assert_eq!(
            key(&|s| s.reservation_lease_ms = 1_000).as_deref(),
            Some("reservation_lease_ms")
        );
        assert_eq!(
            key(&|s| s.owner_lease_ms = 10_000).as_deref(),
            Some("owner_lease_ms")
        );
        assert_eq!(
            key(&|s| s.max_lwt_rounds = 0).as_deref(),
            Some("max_lwt_rounds")
        );
    }
}
