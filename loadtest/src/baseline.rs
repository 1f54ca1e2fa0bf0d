//! The classic design paycore replaces, as a target: Redis for submit tokens and per-order
//! locks, SQLite for the order rows, one transaction per request. For each request it does what
//! that design's service code does:
//!
//! - issue a token: `SET tok:<t> <merchant> NX EX <ttl>`;
//! - create: consume the token with a Lua get-compare-delete, take the lock on the merchant's
//!   order number with `SET key value NX PX`, check-then-insert the row in one SQLite
//!   transaction, release the lock with a compare-and-delete Lua script;
//! - pay: take the order's lock, read-modify-write its row (CREATED becomes PAYING with a new
//!   serial; a repeat answers the stored serial; PAID answers `already_paid`), release the lock;
//! - read: read the row, no lock (the classic read path);
//! - close: take the order's lock, read the row, write CLOSED if it is unpaid (a closed one is
//!   answered as it is; a paid one gets `already_paid`), release the lock;
//! - a channel's paid result: take the order's lock, read the row, write PAID if it is unpaid
//!   (a repeat, or a result for a closed order, changes nothing), release the lock.
//!
//! Reads under the lock that find nothing to change write nothing: a lock for every operation
//! that may change the order, and only those.
//!
//! A lock held by someone else is retried with capped exponential back-off plus jitter until a
//! wait limit, as lock helpers of that design do (Redisson's `tryLock(wait, lease)`, or the
//! hand-written spin loops). The SQLite file has the same durability as paycore's default
//! (`synchronous = FULL`, WAL), but each request commits on its own: there is no group commit.
//! Everything runs in the load generator's process, with no HTTP and no signature checks, which
//! favours the baseline.

use crate::target::{CallError, CallResult, Payment, Target};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Consumes a submit token if it belongs to the merchant: 1 consumed, 0 unknown or used,
/// -1 another merchant's.
pub const CONSUME_TOKEN_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if v ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
return 1
";

/// Releases a lock only if the caller still owns it: 1 released, 0 not the owner (expired, or
/// taken by someone else since).
pub const RELEASE_LOCK_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Life of an issued token, as paycore's default `token_ttl_secs`.
const TOKEN_TTL_SECS: u64 = 1800;
/// Lease of a lock: it expires by itself if its holder dies.
const LOCK_LEASE_MS: u64 = 5000;

/// How a held lock is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First pause.
    pub base: Duration,
    /// Longest pause.
    pub cap: Duration,
    /// Give up (answer `lock_timeout`) after waiting this long in all.
    pub max_wait: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(2),
            cap: Duration::from_millis(50),
            max_wait: Duration::from_secs(3),
        }
    }
}

impl Backoff {
    /// The pause before retry number `attempt` (from 0): doubling from `base`, capped, with a
    /// jitter in [50%, 100%] from `noise` so that waiters do not retry in lockstep.
    pub fn pause(&self, attempt: u32, noise: u64) -> Duration {
        let full = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.cap);
        let share = 0.5 + (noise % 1000) as f64 / 2000.0;
        full.mul_f64(share)
    }
}

/// How a repeated pay treats the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RepeatWrite {
    /// Write only when the status changes (a repeat is a read under the lock): the baseline's
    /// most favourable reading.
    OnChange,
    /// Write on every pay (count the attempt): what much classic code does.
    Always,
}

/// SplitMix64: cheap, good-enough noise for jitter and ids, no shared state.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The classic Redis-lock + SQLite design.
pub struct RedisLock {
    redis: redis::aio::MultiplexedConnection,
    consume: redis::Script,
    release: redis::Script,
    pool: Mutex<Vec<Connection>>,
    permits: Semaphore,
    backoff: Backoff,
    repeat_write: RepeatWrite,
    merchant: String,
    run_id: String,
    seq: AtomicU64,
}

fn backend(e: impl std::fmt::Display) -> CallError {
    CallError::Transport(format!("backend {e}"))
}

fn refuse(status: u16, code: &str) -> CallError {
    CallError::Answer {
        status,
        code: code.into(),
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
  order_id TEXT PRIMARY KEY,
  merchant_id TEXT NOT NULL,
  merchant_order_no TEXT NOT NULL,
  amount INTEGER NOT NULL,
  status TEXT NOT NULL,
  pay_serial_no TEXT,
  pay_requests INTEGER NOT NULL DEFAULT 0,
  version INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (merchant_id, merchant_order_no)
);";

impl RedisLock {
    /// Connects to Redis, opens (creating) the SQLite file with `connections` pooled
    /// connections, and checks both answer.
    pub async fn connect(
        redis_url: &str,
        db_path: &Path,
        connections: usize,
        backoff: Backoff,
        repeat_write: RepeatWrite,
        run_id: &str,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(redis_url)?;
        let mut redis = client.get_multiplexed_async_connection().await?;
        let _: String = redis::cmd("PING").query_async(&mut redis).await?;
        let mut pool = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            let c = Connection::open(db_path)?;
            c.busy_timeout(Duration::from_secs(5))?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "FULL")?;
            pool.push(c);
        }
        pool[0].execute_batch(SCHEMA)?;
        Ok(Self {
            redis,
            consume: redis::Script::new(CONSUME_TOKEN_LUA),
            release: redis::Script::new(RELEASE_LOCK_LUA),
            permits: Semaphore::new(pool.len()),
            pool: Mutex::new(pool),
            backoff,
            repeat_write,
            merchant: "demo".into(),
            run_id: run_id.to_string(),
            seq: AtomicU64::new(0),
        })
    }

    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs `f` in one transaction on a pooled connection, off the async threads.
    async fn db<R, F>(&self, f: F) -> CallResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> CallResult<R> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(backend)?;
        let mut conn = self
            .pool
            .lock()
            .map_err(|_| backend("pool poisoned"))?
            .pop()
            .ok_or_else(|| backend("pool empty"))?;
        let (conn, r) = tokio::task::spawn_blocking(move || {
            let r = f(&mut conn);
            (conn, r)
        })
        .await
        .map_err(backend)?;
        if let Ok(mut pool) = self.pool.lock() {
            pool.push(conn);
        }
        r
    }

    /// Takes `key` with `SET key value NX PX lease`, retrying a held lock with back-off.
    /// Answers the owner value to release with.
    pub async fn lock(&self, key: &str) -> CallResult<String> {
        let value = format!("{}-{}", self.run_id, self.next());
        let started = Instant::now();
        let mut conn = self.redis.clone();
        for attempt in 0u32.. {
            let got: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(&value)
                .arg("NX")
                .arg("PX")
                .arg(LOCK_LEASE_MS)
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            if got.is_some() {
                return Ok(value);
            }
            let pause = self.backoff.pause(attempt, splitmix(self.next()));
            if started.elapsed() + pause > self.backoff.max_wait {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        Err(refuse(503, "lock_timeout"))
    }

    /// Releases `key` if `value` still owns it; answers whether it did.
    pub async fn unlock(&self, key: &str, value: &str) -> CallResult<bool> {
        let mut conn = self.redis.clone();
        let n: i64 = self
            .release
            .key(key)
            .arg(value)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(n == 1)
    }

    /// Consumes a token for the merchant: Ok when it was theirs and unused.
    pub async fn consume_token(&self, token: &str) -> CallResult<()> {
        let mut conn = self.redis.clone();
        let n: i64 = self
            .consume
            .key(format!("tok:{token}"))
            .arg(&self.merchant)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        match n {
            1 => Ok(()),
            _ => Err(refuse(422, "token_invalid")),
        }
    }

    /// Runs `body` under the lock on `key`, releasing it whatever `body` answers.
    async fn locked<R, F, Fut>(&self, key: &str, body: F) -> CallResult<R>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = CallResult<R>>,
    {
        let owner = self.lock(key).await?;
        let r = body().await;
        // A lease that ran out means someone else may have written meanwhile: the classic
        // design's known hole, reported as an error so it shows up in the counts.
        match self.unlock(key, &owner).await {
            Ok(true) => r,
            Ok(false) => Err(refuse(500, "lock_lost")),
            Err(e) => Err(e),
        }
    }
}

impl Target for RedisLock {
    fn name(&self) -> &'static str {
        "redis-lock"
    }

    async fn issue_token(&self) -> CallResult<String> {
        let token = format!("bt{}-{}", self.run_id, self.next());
        let mut conn = self.redis.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("tok:{token}"))
            .arg(&self.merchant)
            .arg("NX")
            .arg("EX")
            .arg(TOKEN_TTL_SECS)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        set.map(|_| token).ok_or_else(|| backend("token collision"))
    }

    async fn create(
        &self,
        token: &str,
        merchant_order_no: &str,
        amount: i64,
    ) -> CallResult<String> {
        self.consume_token(token).await?;
        let key = format!("lock:mo:{}:{merchant_order_no}", self.merchant);
        let order_id = format!("bo{}-{}", self.run_id, self.next());
        let merchant = self.merchant.clone();
        let no = merchant_order_no.to_string();
        self.locked(&key, || {
            let order_id = order_id.clone();
            self.db(move |c| {
                // Read, then write in an IMMEDIATE transaction: the Redis lock is what keeps
                // the row from changing in between (the design's premise), and SQLite takes its
                // write lock only for the write, as a row lock in a server database would.
                let existing: Option<String> = c
                    .query_row(
                        "SELECT order_id FROM orders WHERE merchant_id = ?1 AND merchant_order_no = ?2",
                        params![merchant, no],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(backend)?;
                if existing.is_some() {
                    return Err(refuse(409, "duplicate_order"));
                }
                let now = now_ms();
                let tx = c
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(backend)?;
                tx.execute(
                    "INSERT INTO orders (order_id, merchant_id, merchant_order_no, amount, status, version, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, 'CREATED', 1, ?5, ?5)",
                    params![order_id, merchant, no, amount, now],
                )
                .map_err(backend)?;
                tx.commit().map_err(backend)?;
                Ok(order_id)
            })
        })
        .await
    }

    async fn pay(&self, order_id: &str) -> CallResult<Payment> {
        let key = format!("lock:order:{order_id}");
        let id = order_id.to_string();
        let serial = format!("bp{}-{}", self.run_id, self.next());
        let always = self.repeat_write == RepeatWrite::Always;
        self.locked(&key, || {
            self.db(move |c| {
                let row: Option<(String, Option<String>)> = c
                    .query_row(
                        "SELECT status, pay_serial_no FROM orders WHERE order_id = ?1",
                        params![id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(backend)?;
                let now = now_ms();
                let mut write = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> CallResult<()> {
                    let tx = c
                        .transaction_with_behavior(TransactionBehavior::Immediate)
                        .map_err(backend)?;
                    tx.execute(sql, p).map_err(backend)?;
                    tx.commit().map_err(backend)
                };
                match row {
                    None => Err(refuse(404, "order_not_found")),
                    Some((status, _)) if status == "CREATED" => {
                        write(
                            "UPDATE orders SET status = 'PAYING', pay_serial_no = ?2, pay_requests = pay_requests + 1,
                             version = version + 1, updated_at = ?3 WHERE order_id = ?1",
                            params![id, serial, now],
                        )?;
                        Ok(serial)
                    }
                    Some((status, Some(stored))) if status == "PAYING" => {
                        if always {
                            write(
                                "UPDATE orders SET pay_requests = pay_requests + 1, updated_at = ?2 WHERE order_id = ?1",
                                params![id, now],
                            )?;
                        }
                        Ok(stored)
                    }
                    Some((status, _)) if status == "PAID" || status == "REFUNDED" => {
                        Err(refuse(409, "already_paid"))
                    }
                    Some(_) => Err(refuse(409, "order_closed")),
                }
            })
        })
        .await
        .map(|serial| Payment {
            trade_no: serial.clone(),
            serial,
        })
    }

    async fn read(&self, order_id: &str) -> CallResult<String> {
        let id = order_id.to_string();
        self.db(move |c| {
            c.query_row(
                "SELECT status FROM orders WHERE order_id = ?1",
                params![id],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(backend)?
            .ok_or_else(|| refuse(404, "order_not_found"))
        })
        .await
    }

    async fn close(&self, order_id: &str) -> CallResult<String> {
        let id = order_id.to_string();
        self.locked(&format!("lock:order:{order_id}"), || {
            self.db(move |c| match status_of(c, &id)?.as_deref() {
                None => Err(refuse(404, "order_not_found")),
                Some("CREATED" | "PAYING") => {
                    set_status(c, &id, "CLOSED")?;
                    Ok("CLOSED".to_string())
                }
                Some("PAID" | "REFUNDED") => Err(refuse(409, "already_paid")),
                Some(other) => Ok(other.to_string()),
            })
        })
        .await
    }

    async fn paid_callback(&self, order_id: &str, _: &Payment, _: i64) -> CallResult<()> {
        let id = order_id.to_string();
        self.locked(&format!("lock:order:{order_id}"), || {
            self.db(move |c| {
                if matches!(status_of(c, &id)?.as_deref(), Some("CREATED" | "PAYING")) {
                    set_status(c, &id, "PAID")?;
                }
                Ok(())
            })
        })
        .await
    }
}

fn status_of(c: &Connection, id: &str) -> CallResult<Option<String>> {
    c.query_row(
        "SELECT status FROM orders WHERE order_id = ?1",
        params![id],
        |r| r.get(0),
    )
    .optional()
    .map_err(backend)
}

fn set_status(c: &mut Connection, id: &str, status: &str) -> CallResult<()> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;
    tx.execute(
        "UPDATE orders SET status = ?2, version = version + 1, updated_at = ?3 WHERE order_id = ?1",
        params![id, status, now_ms()],
    )
    .map_err(backend)?;
    tx.commit().map_err(backend)
}

/// Checks the baseline's Redis logic against a real server: a token is consumed once, a held
/// lock keeps a second taker out until its wait limit, and only the owner can release it.
/// Used by `run.sh` (and by hand) rather than `cargo test`, which has no Redis.
pub async fn self_check(redis_url: &str, db_path: &Path) -> anyhow::Result<()> {
    let quick = Backoff {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
        max_wait: Duration::from_millis(50),
    };
    let b = RedisLock::connect(redis_url, db_path, 2, quick, RepeatWrite::OnChange, "chk").await?;
    let t = b
        .issue_token()
        .await
        .map_err(|e| anyhow::anyhow!(e.label()))?;
    anyhow::ensure!(
        b.consume_token(&t).await.is_ok(),
        "a fresh token is consumed"
    );
    anyhow::ensure!(
        b.consume_token(&t).await == Err(refuse(422, "token_invalid")),
        "a token is consumed only once"
    );
    let key = format!("lock:check:{}", splitmix(now_ms() as u64));
    let owner = b.lock(&key).await.map_err(|e| anyhow::anyhow!(e.label()))?;
    anyhow::ensure!(
        b.lock(&key).await == Err(refuse(503, "lock_timeout")),
        "a held lock keeps others out until their wait limit"
    );
    anyhow::ensure!(
        !b.unlock(&key, "not-the-owner")
            .await
            .map_err(|e| anyhow::anyhow!(e.label()))?,
        "only the owner releases"
    );
    anyhow::ensure!(
        b.unlock(&key, &owner)
            .await
            .map_err(|e| anyhow::anyhow!(e.label()))?,
        "the owner releases"
    );
    let again = b.lock(&key).await.map_err(|e| anyhow::anyhow!(e.label()))?;
    anyhow::ensure!(
        b.unlock(&key, &again)
            .await
            .map_err(|e| anyhow::anyhow!(e.label()))?,
        "a released lock can be taken again"
    );
    let t = b
        .issue_token()
        .await
        .map_err(|e| anyhow::anyhow!(e.label()))?;
    let id = b
        .create(&t, &format!("CHK-{}", now_ms()), 100)
        .await
        .map_err(|e| anyhow::anyhow!(e.label()))?;
    let s1 = b.pay(&id).await.map_err(|e| anyhow::anyhow!(e.label()))?;
    let s2 = b.pay(&id).await.map_err(|e| anyhow::anyhow!(e.label()))?;
    anyhow::ensure!(s1 == s2, "a repeated pay answers the same serial");
    anyhow::ensure!(
        b.read(&id).await == Ok("PAYING".into()),
        "the row reads PAYING"
    );
    b.paid_callback(&id, &s1, 100)
        .await
        .map_err(|e| anyhow::anyhow!(e.label()))?;
    anyhow::ensure!(
        b.read(&id).await == Ok("PAID".into()),
        "a result makes it PAID"
    );
    anyhow::ensure!(
        b.close(&id).await == Err(refuse(409, "already_paid")),
        "a paid order does not close"
    );
    let t = b
        .issue_token()
        .await
        .map_err(|e| anyhow::anyhow!(e.label()))?;
    let id = b
        .create(&t, &format!("CHK-{}-close", now_ms()), 100)
        .await
        .map_err(|e| anyhow::anyhow!(e.label()))?;
    anyhow::ensure!(
        b.close(&id).await == Ok("CLOSED".into()),
        "an unpaid order closes"
    );
    b.paid_callback(&id, &s1, 100)
        .await
        .map_err(|e| anyhow::anyhow!(e.label()))?;
    anyhow::ensure!(
        b.read(&id).await == Ok("CLOSED".into()),
        "a late result leaves a closed order closed"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let b = Backoff::default();
        let full = |a| b.pause(a, 999); // noise at the top of the range: ~100%
        assert!(full(0) <= Duration::from_millis(2) && full(0) > Duration::from_micros(1900));
        assert!(full(1) > full(0));
        assert!(full(10) <= b.cap);
        assert_eq!(
            b.pause(40, 999),
            b.pause(41, 999),
            "huge attempts stay capped"
        );
        let low = b.pause(0, 0);
        assert_eq!(low, Duration::from_millis(1), "jitter goes down to half");
    }

    #[test]
    fn splitmix_spreads_consecutive_inputs() {
        let a: Vec<u64> = (0..1000).map(|i| splitmix(i) % 100).collect();
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 90, "{}", distinct.len());
    }

    #[test]
    fn the_lua_scripts_compare_before_they_delete() {
        // The scripts' logic is exercised against a real Redis by `self_check` (run.sh); here,
        // that neither deletes without comparing first.
        let get = CONSUME_TOKEN_LUA.find("GET").unwrap();
        let cmp = CONSUME_TOKEN_LUA.find("~= ARGV[1]").unwrap();
        let del = CONSUME_TOKEN_LUA.find("DEL").unwrap();
        assert!(get < cmp && cmp < del);
        let cmp = RELEASE_LOCK_LUA.find("== ARGV[1]").unwrap();
        let del = RELEASE_LOCK_LUA.find("DEL").unwrap();
        assert!(cmp < del);
    }
}
