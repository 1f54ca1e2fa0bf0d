//! The scenarios, written once against `Target`. A scenario turns the i-th arrival into a unit
//! of work (one or several requests), records each request, and records the unit's end. The
//! first request of a unit is charged from the unit's due time, so time spent waiting to be sent
//! counts; later requests of the unit are charged from their own start, and the unit's total
//! (`paid` for the lifecycle) from the due time again.

use crate::baseline::splitmix;
use crate::stats::{Outcome, Stats};
use crate::target::{CallError, CallResult, Payment, Target};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shares of the contention scenario's operations on an order, percent: pay, read, the
/// channel's paid result (a pay when no payment is open yet), close.
const CONTENTION_MIX: [(Op, u64); 4] = [
    (Op::Pay, 40),
    (Op::Read, 40),
    (Op::Paid, 10),
    (Op::Close, 10),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Pay,
    Read,
    Paid,
    Close,
}

/// The operation for a draw in `0..100`.
fn pick_op(mut draw: u64) -> Op {
    for (op, share) in CONTENTION_MIX {
        if draw < share {
            return op;
        }
        draw -= share;
    }
    Op::Close
}

/// One order of the contention set.
#[derive(Debug, Clone)]
struct Slot {
    order_id: String,
    amount: i64,
    /// The payment a pay of this order opened, once one answered.
    payment: Option<Payment>,
    /// A unit is creating this slot's replacement.
    replacing: bool,
}

/// The amount of arrival `i`'s order, minor units.
fn amount_of(i: u64) -> i64 {
    100 + (i % 9900) as i64
}

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Token, then create: one new order per unit.
    Create,
    /// Token, create, pay, then poll until the simulator's callback made the order PAID.
    Lifecycle,
    /// Duplicate pays and reads on a few pre-created orders (most are PAID soon, and then
    /// answered from the order's state: a read-mostly case).
    Hot,
    /// Pays, reads, paid results and closes racing on a set of unsettled orders; each settled
    /// order is replaced by a fresh one, so the set stays contended: the case locks are for.
    Contention,
    /// Create, lifecycle, pay and read units in configurable ratios.
    Mixed,
}

impl Kind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Lifecycle => "lifecycle",
            Kind::Hot => "hot",
            Kind::Contention => "contention",
            Kind::Mixed => "mixed",
        }
    }
}

/// Weights of the mixed scenario's unit kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// Create units.
    pub create: u32,
    /// Lifecycle units.
    pub lifecycle: u32,
    /// Pays on hot orders.
    pub pay: u32,
    /// Reads of hot orders.
    pub read: u32,
}

impl Mix {
    /// Parses `create=40,lifecycle=10,pay=20,read=30` (missing kinds weigh 0).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut m = Mix {
            create: 0,
            lifecycle: 0,
            pay: 0,
            read: 0,
        };
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part}: expected kind=weight"))?;
            let v: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("{part}: weight must be a whole number"))?;
            match k.trim() {
                "create" => m.create = v,
                "lifecycle" => m.lifecycle = v,
                "pay" => m.pay = v,
                "read" => m.read = v,
                other => {
                    return Err(format!(
                        "unknown kind {other} (create, lifecycle, pay, read)"
                    ));
                }
            }
        }
        if m.total() == 0 {
            return Err("the mix needs at least one positive weight".into());
        }
        Ok(m)
    }

    fn total(&self) -> u32 {
        self.create + self.lifecycle + self.pay + self.read
    }

    /// The unit kind for a draw in `0..total()`.
    fn pick(&self, draw: u32) -> Unit {
        let mut d = draw % self.total();
        for (w, u) in [
            (self.create, Unit::Create),
            (self.lifecycle, Unit::Lifecycle),
            (self.pay, Unit::Pay),
        ] {
            if d < w {
                return u;
            }
            d -= w;
        }
        Unit::Read
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Create,
    Lifecycle,
    Pay,
    Read,
}

/// How the lifecycle waits for PAID.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Polling {
    /// Pause after the pay answer before the first read.
    pub first: Duration,
    /// Pause between reads.
    pub every: Duration,
    /// Give up (the unit fails with `paid_timeout`) after this long from the pay answer.
    pub deadline: Duration,
}

/// A scenario bound to a target.
pub struct Workload<T: Target> {
    target: T,
    kind: Kind,
    mix: Mix,
    hot_pay_percent: u32,
    polling: Polling,
    run_id: String,
    hot: Vec<String>,
    slots: Vec<Mutex<Slot>>,
}

fn outcome<R>(r: &CallResult<R>, expected: &[&str]) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(e) if e.code().is_some_and(|c| expected.contains(&c)) => Outcome::Expected(e.label()),
        Err(e) => Outcome::Error(e.label()),
    }
}

impl<T: Target> Workload<T> {
    /// A workload; `prepare` must run before hot, pay or read units.
    pub fn new(
        target: T,
        kind: Kind,
        mix: Mix,
        hot_pay_percent: u32,
        polling: Polling,
        run_id: &str,
    ) -> Self {
        Self {
            target,
            kind,
            mix,
            hot_pay_percent: hot_pay_percent.min(100),
            polling,
            run_id: run_id.to_string(),
            hot: Vec::new(),
            slots: Vec::new(),
        }
    }

    /// The target.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// The scenario.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Creates the hot orders (for `hot`, and for `mixed` with pay or read units); unmeasured.
    pub async fn prepare(&mut self, hot_orders: usize) -> anyhow::Result<()> {
        let needs_hot = match self.kind {
            Kind::Hot | Kind::Contention => true,
            Kind::Mixed => self.mix.pay + self.mix.read > 0,
            _ => false,
        };
        if !needs_hot {
            return Ok(());
        }
        anyhow::ensure!(hot_orders > 0, "the scenario needs at least one hot order");
        // A few at a time: this is set-up, not load.
        const SETUP_CONCURRENCY: usize = 16;
        let mut ids = Vec::with_capacity(hot_orders);
        let (target, run_id) = (&self.target, &self.run_id);
        for chunk_start in (0..hot_orders).step_by(SETUP_CONCURRENCY) {
            let end = (chunk_start + SETUP_CONCURRENCY).min(hot_orders);
            let made = futures::future::join_all((chunk_start..end).map(|k| {
                let no = format!("LT{run_id}-hot-{k}");
                async move {
                    let token = target.issue_token().await?;
                    target.create(&token, &no, 100).await
                }
            }))
            .await;
            for r in made {
                ids.push(r.map_err(|e| anyhow::anyhow!("creating a hot order: {}", e.label()))?);
            }
        }
        self.slots = ids
            .iter()
            .map(|id| {
                Mutex::new(Slot {
                    order_id: id.clone(),
                    amount: 100,
                    payment: None,
                    replacing: false,
                })
            })
            .collect();
        self.hot = ids;
        Ok(())
    }

    fn merchant_order_no(&self, i: u64) -> String {
        format!("LT{}-{i}", self.run_id)
    }

    /// Runs the unit of arrival `i`, due at `due`, recording into `stats`.
    pub async fn unit(&self, stats: &Stats, i: u64, due: Instant) {
        let unit = match self.kind {
            Kind::Create => Unit::Create,
            Kind::Lifecycle => Unit::Lifecycle,
            Kind::Hot => {
                if (splitmix(i ^ 0x5eed) % 100) < u64::from(self.hot_pay_percent) {
                    Unit::Pay
                } else {
                    Unit::Read
                }
            }
            Kind::Mixed => self.mix.pick((splitmix(i ^ 0x5eed) % 1_000_003) as u32),
            Kind::Contention => {
                let ok = self.contended(stats, i, due).await;
                stats.unit(ok, Instant::now());
                return;
            }
        };
        let ok = match unit {
            Unit::Create => self.create_flow(stats, i, due).await.is_some(),
            Unit::Lifecycle => self.lifecycle(stats, i, due).await,
            Unit::Pay => {
                let id = &self.hot[(splitmix(i) % self.hot.len() as u64) as usize];
                let r = self.target.pay(id).await;
                // A repeat after the callback made the order PAID answers already_paid: correct.
                let o = outcome(&r, &["already_paid"]);
                stats.record("pay", due, Instant::now(), &o);
                !matches!(o, Outcome::Error(_))
            }
            Unit::Read => {
                let id = &self.hot[(splitmix(i) % self.hot.len() as u64) as usize];
                let r = self.target.read(id).await;
                let o = outcome(&r, &[]);
                stats.record("read", due, Instant::now(), &o);
                o == Outcome::Ok
            }
        };
        stats.unit(ok, Instant::now());
    }

    /// One operation of the contention scenario on one order of the set; replaces the order
    /// when the answer says it is settled.
    async fn contended(&self, stats: &Stats, i: u64, due: Instant) -> bool {
        let k = (splitmix(i) % self.slots.len() as u64) as usize;
        let slot = lock(&self.slots[k]).clone();
        let op = pick_op(splitmix(i ^ 0x5eed) % 100);
        let id = slot.order_id.as_str();
        let (o, settled) = match (op, &slot.payment) {
            (Op::Pay, _) | (Op::Paid, None) => {
                let r = self.target.pay(id).await;
                if let Ok(p) = &r {
                    let mut s = lock(&self.slots[k]);
                    if s.order_id == id {
                        s.payment = Some(p.clone());
                    }
                }
                let settled = r
                    .as_ref()
                    .is_err_and(|e| matches!(e.code(), Some("already_paid" | "order_closed")));
                (
                    ("pay", outcome(&r, &["already_paid", "order_closed"])),
                    settled,
                )
            }
            (Op::Read, _) => {
                let r = self.target.read(id).await;
                let settled = r
                    .as_deref()
                    .is_ok_and(|s| matches!(s, "PAID" | "CLOSED" | "FAILED" | "REFUNDED"));
                (("read", outcome(&r, &[])), settled)
            }
            (Op::Paid, Some(p)) => {
                let r = self.target.paid_callback(id, p, slot.amount).await;
                (("paid_result", outcome(&r, &[])), r.is_ok())
            }
            (Op::Close, _) => {
                let r = self.target.close(id).await;
                let settled =
                    r.is_ok() || r.as_ref().is_err_and(|e| e.code() == Some("already_paid"));
                (("close", outcome(&r, &["already_paid"])), settled)
            }
        };
        let ((name, o), settled) = (o, settled);
        stats.record(name, due, Instant::now(), &o);
        let mut ok = !matches!(o, Outcome::Error(_));
        if settled {
            ok &= self.replace(stats, k, id, i).await;
        }
        ok
    }

    /// Replaces the settled order `id` of slot `k` by a fresh one, unless another unit is
    /// doing it or did; answers false if the replacement failed (the slot keeps the old order
    /// and a later unit tries again).
    async fn replace(&self, stats: &Stats, k: usize, id: &str, i: u64) -> bool {
        {
            let mut s = lock(&self.slots[k]);
            if s.order_id != id || s.replacing {
                return true;
            }
            s.replacing = true;
        }
        let made = self.create_flow(stats, i, Instant::now()).await;
        let mut s = lock(&self.slots[k]);
        s.replacing = false;
        match made {
            Some(new_id) => {
                *s = Slot {
                    order_id: new_id,
                    amount: amount_of(i),
                    payment: None,
                    replacing: false,
                };
                true
            }
            None => false,
        }
    }

    async fn create_flow(&self, stats: &Stats, i: u64, due: Instant) -> Option<String> {
        let r = self.target.issue_token().await;
        stats.record("token", due, Instant::now(), &outcome(&r, &[]));
        let token = r.ok()?;
        let started = Instant::now();
        let r = self
            .target
            .create(&token, &self.merchant_order_no(i), amount_of(i))
            .await;
        stats.record("create", started, Instant::now(), &outcome(&r, &[]));
        r.ok()
    }

    async fn lifecycle(&self, stats: &Stats, i: u64, due: Instant) -> bool {
        let Some(id) = self.create_flow(stats, i, due).await else {
            return false;
        };
        let started = Instant::now();
        let r = self.target.pay(&id).await;
        stats.record("pay", started, Instant::now(), &outcome(&r, &[]));
        if r.is_err() {
            return false;
        }
        let paid_by = Instant::now() + self.polling.deadline;
        tokio::time::sleep(self.polling.first).await;
        loop {
            let started = Instant::now();
            let r = self.target.read(&id).await;
            let done = Instant::now();
            stats.record("poll", started, done, &outcome(&r, &[]));
            match r.as_deref() {
                Ok("PAID") => {
                    stats.record("paid", due, done, &Outcome::Ok);
                    return true;
                }
                Ok("FAILED") | Ok("CLOSED") => {
                    let e = CallError::Answer {
                        status: 200,
                        code: "payment_not_made".into(),
                    };
                    stats.record("paid", due, done, &Outcome::Error(e.label()));
                    return false;
                }
                _ if done >= paid_by => {
                    stats.record("paid", due, done, &Outcome::Error("paid_timeout".into()));
                    return false;
                }
                _ => tokio::time::sleep(self.polling.every).await,
            }
        }
    }
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    // A slot holds no invariant a panic could break.
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_parses_and_picks_in_proportion() {
        let m = Mix::parse("create=2, read=1,pay=1").unwrap();
        assert_eq!(m.lifecycle, 0);
        let mut counts = [0u32; 4];
        for i in 0..40_000u64 {
            let k = match m.pick((splitmix(i) % 1_000_003) as u32) {
                Unit::Create => 0,
                Unit::Lifecycle => 1,
                Unit::Pay => 2,
                Unit::Read => 3,
            };
            counts[k] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((19_000..21_000).contains(&counts[0]), "{counts:?}");
        assert!((9_000..11_000).contains(&counts[2]), "{counts:?}");
        assert!(Mix::parse("create=0").is_err());
        assert!(Mix::parse("refund=1").is_err());
        assert!(Mix::parse("create").is_err());
    }

    #[test]
    fn contention_operations_are_drawn_in_their_shares() {
        assert_eq!(CONTENTION_MIX.iter().map(|(_, s)| s).sum::<u64>(), 100);
        let mut counts = std::collections::HashMap::new();
        for i in 0..100_000u64 {
            *counts
                .entry(pick_op(splitmix(i ^ 0x5eed) % 100))
                .or_insert(0u32) += 1;
        }
        for (op, share) in CONTENTION_MIX {
            let n = counts[&op];
            let want = share as u32 * 1000;
            assert!(n.abs_diff(want) < want / 10 + 100, "{op:?}: {n} for {want}");
        }
    }

    #[test]
    fn expected_answers_are_not_errors() {
        let r: CallResult<()> = Err(CallError::Answer {
            status: 409,
            code: "already_paid".into(),
        });
        assert_eq!(
            outcome(&r, &["already_paid"]),
            Outcome::Expected("409 already_paid".into())
        );
        assert_eq!(outcome(&r, &[]), Outcome::Error("409 already_paid".into()));
        let t: CallResult<()> = Err(CallError::Transport("timeout".into()));
        assert_eq!(
            outcome(&t, &["already_paid"]),
            Outcome::Error("transport timeout".into())
        );
    }
}
