//! One `paycore serve` per keyspace at a time: the **owner lease**.
//!
//! Everything one process keeps for the keyspace assumes it is the only writer: the log's
//! positions (handed out in memory, under the epoch the owner claimed), the consumers'
//! cursors, the ledger's balance snapshots (absolute values written by the one consumer of a
//! log partition). Two `serve` processes on one keyspace (a rolling deploy that starts the new
//! pod before the old one stopped, a second machine pointed at the same cluster) would let
//! one owner's readers skip what the other has in flight, and two ledger consumers overwrite
//! each other's snapshots. So `serve` holds a lease on the keyspace:
//!
//! - **Taking it**: one LWT, `INSERT .. IF NOT EXISTS USING TTL`. Held by another: wait, one
//!   renewal interval at a time, for it to be released (a clean stop deletes it) or to run
//!   out (a crashed holder stops renewing: the TTL ends it on the server's clock). A holder
//!   that keeps renewing for two whole leases is alive: opening fails, naming it.
//! - **Keeping it**: every `owner_lease_ms / 6`, an LWT `UPDATE .. USING TTL .. IF holder = me`
//!   that writes every column again (a column not written keeps its old TTL).
//! - **Fencing itself**: refused (another holds it now), or no renewal applied for
//!   `owner_lease_ms - 2 * request_timeout_ms` (the lease may run out on the server before an
//!   answer could say so, and a write sent now may take a request timeout to land): the
//!   store closes, every statement answers `Closed` from then on and `/healthz` fails, so the
//!   orchestrator restarts the process, which waits for the lease again.
//! - **Giving it up**: `close` deletes it (`IF holder = me`), so a restart does not wait.
//!
//! Only the log's owner needs it: `paycore ledger verify` and the `log` commands open the
//! keyspace as readers (no epoch claimed, no change written), next to a running `serve`.

use super::orders::Lwt;
use super::{ScyllaStore, be};
use crate::storage::StoreError;
use scylla::value::CqlTimestamp;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The lease's row (the whole keyspace has one owner).
const LEASE: &str = "serve";

/// The table (migration 5).
pub(super) const DDL: &[&str] = &["CREATE TABLE IF NOT EXISTS {ks}.owner_lease (
            name   text PRIMARY KEY,
            holder text,
            since  timestamp
        )"];

/// What names this process as the holder: host, pid and start time, so an operator can tell
/// which process holds a keyspace.
fn holder_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    let started = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!("{host} pid {} since {started}", std::process::id())
}

impl ScyllaStore {
    fn owner_lease(&self) -> Duration {
        Duration::from_millis(self.settings.owner_lease_ms)
    }

    /// The lease's TTL in whole seconds (rounded up).
    fn lease_ttl(&self) -> i32 {
        i32::try_from(self.settings.owner_lease_ms.div_ceil(1_000)).unwrap_or(i32::MAX)
    }

    fn renew_every(&self) -> Duration {
        self.owner_lease() / 6
    }

    /// No renewal applied for this long: this process fences itself.
    fn fence_after(&self) -> Duration {
        self.owner_lease()
            .saturating_sub(Duration::from_millis(2 * self.settings.request_timeout_ms))
    }

    /// Takes the keyspace's owner lease (waiting for a crashed holder's to run out) and starts
    /// keeping it.
    pub(super) async fn take_ownership(&self) -> Result<(), StoreError> {
        let me = holder_id();
        let give_up = Instant::now() + 2 * self.owner_lease() + self.renew_every();
        let mut waited_for: Option<String> = None;
        loop {
            let sent = Instant::now();
            let result = self
                .exec(
                    &self.owner_st.take,
                    (
                        LEASE,
                        me.as_str(),
                        CqlTimestamp(super::now_ms()),
                        self.lease_ttl(),
                    ),
                )
                .await?;
            let lwt = Lwt::read(result)?;
            if lwt.applied {
                if let Some(old) = waited_for {
                    tracing::warn!(previous = %old, holder = %me,
                        "took the keyspace's owner lease after its holder stopped renewing it");
                }
                self.owner
                    .set(me.clone())
                    .map_err(|_| be("the owner lease was taken twice"))?;
                self.keep_ownership(me, sent);
                return Ok(());
            }
            let holder = lwt.text("holder").unwrap_or("?").to_string();
            if Instant::now() >= give_up {
                return Err(StoreError::Backend(format!(
                    "keyspace {} is owned by another paycore ({holder}), which keeps renewing \
                     its lease: stop it first (one `paycore serve` per keyspace)",
                    self.settings.keyspace
                )));
            }
            if waited_for.as_deref() != Some(holder.as_str()) {
                tracing::warn!(%holder, lease_ms = self.settings.owner_lease_ms,
                    "the keyspace's owner lease is held; waiting for it to be released or to run out");
                waited_for = Some(holder);
            }
            tokio::time::sleep(self.renew_every()).await;
        }
    }

    /// Renews the lease in the background until the store closes, and fences the store when
    /// the lease is lost (or may be).
    fn keep_ownership(&self, me: String, taken: Instant) {
        let store = self.clone();
        tokio::spawn(async move {
            // Fenced when this passes with no renewal applied since: a deadline of its own,
            // not checked only after a renewal answers (which may take a request timeout).
            let mut fence_at = taken + store.fence_after();
            loop {
                let now = Instant::now();
                tokio::time::sleep(
                    store
                        .renew_every()
                        .min(fence_at.saturating_duration_since(now)),
                )
                .await;
                if store.closed.load(Ordering::Acquire) {
                    return;
                }
                if Instant::now() >= fence_at {
                    store.fence("no renewal of the owner lease was applied in time");
                    return;
                }
                let sent = Instant::now();
                let renew = store.exec(
                    &store.owner_st.renew,
                    (
                        store.lease_ttl(),
                        me.as_str(),
                        CqlTimestamp(super::now_ms()),
                        LEASE,
                        me.as_str(),
                    ),
                );
                let renewed = match tokio::time::timeout_at(fence_at.into(), renew).await {
                    Ok(answer) => answer.and_then(Lwt::read),
                    Err(_) => {
                        store.fence("no renewal of the owner lease was applied in time");
                        return;
                    }
                };
                match renewed {
                    Ok(lwt) if lwt.applied => fence_at = sent + store.fence_after(),
                    Ok(lwt) => {
                        let holder = lwt.text("holder").unwrap_or("nobody");
                        store.fence(&format!("the owner lease is held by {holder} now"));
                        return;
                    }
                    Err(StoreError::Closed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "renewing the owner lease failed; trying again")
                    }
                }
            }
        });
    }

    /// Stops every statement of this store: another paycore may own the keyspace now.
    fn fence(&self, why: &str) {
        tracing::error!(reason = why, keyspace = %self.settings.keyspace,
            "this paycore no longer owns the keyspace: every storage operation is refused from now on; restart it");
        self.fenced.store(true, Ordering::Release);
        self.closed.store(true, Ordering::Release);
    }

    /// Gives the lease up, if this store holds it (a clean stop: the next owner need not wait).
    pub(super) async fn release_ownership(&self) {
        let Some(me) = self.owner.get() else { return };
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = self
            .exec(&self.owner_st.release, (LEASE, me.as_str()))
            .await
        {
            tracing::warn!(error = %e, "the owner lease was not released: the next owner waits for it to run out");
        }
    }

    /// Whether this store fenced itself (its lease lost).
    pub fn fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }
}

/// This module's prepared statements.
pub(super) struct Statements {
    take: scylla::statement::prepared::PreparedStatement,
    renew: scylla::statement::prepared::PreparedStatement,
    release: scylla::statement::prepared::PreparedStatement,
}

impl Statements {
    pub async fn prepare(
        session: &scylla::client::session::Session,
        serial: scylla::statement::SerialConsistency,
    ) -> Result<Self, StoreError> {
        let p = |cql: &'static str| async move { session.prepare(cql).await.map_err(be) };
        let lwt = |st| super::lwt(st, serial);
        Ok(Self {
            take: lwt(p(
                "INSERT INTO owner_lease (name, holder, since) VALUES (?, ?, ?) \
                 IF NOT EXISTS USING TTL ?",
            )
            .await?),
            renew: lwt(p(
                "UPDATE owner_lease USING TTL ? SET holder = ?, since = ? WHERE name = ? \
                 IF holder = ?",
            )
            .await?),
            release: lwt(p("DELETE FROM owner_lease WHERE name = ? IF holder = ?").await?),
        })
    }
}
