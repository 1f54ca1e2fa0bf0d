//! What a run records while it runs: a latency histogram per request type (microseconds, HDR),
//! the answers that were not a plain success by code, completed and failed units of work, and a
//! per-second timeline. Shared by every request task behind one mutex: a record is a few
//! hundred nanoseconds, far below the cost of the request it describes.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Highest latency the histograms hold; anything slower is clamped to it (and still counted).
pub const MAX_LATENCY: Duration = Duration::from_secs(120);
/// Significant digits kept by every histogram.
const SIGFIG: u8 = 3;

/// How one request ended, as far as the run is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A success answer.
    Ok,
    /// A business answer the scenario expects (e.g. `already_paid` on a duplicate pay): it
    /// counts as served, and is listed under answers.
    Expected(String),
    /// A failure: an unexpected answer or a transport error, named by its code.
    Error(String),
}

/// One second of the timeline.
pub struct Second {
    /// Requests completed in this second.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// Units of work completed in this second.
    pub units: u64,
    /// Latency of every request completed in this second.
    pub latency: Histogram<u64>,
    /// Resident set size of the watched process, when one is watched.
    pub rss_kib: Option<u64>,
}

/// Everything recorded so far.
pub struct Recorded {
    /// When the run started (the zero of the schedule).
    pub start: Instant,
    /// Latency per request type.
    pub kinds: BTreeMap<&'static str, Histogram<u64>>,
    /// Failures per request type.
    pub kind_errors: BTreeMap<&'static str, u64>,
    /// Non-success answers by "type code", expected ones included.
    pub answers: BTreeMap<String, u64>,
    /// Failures by code.
    pub errors: BTreeMap<String, u64>,
    /// Units of work that completed fully.
    pub units_ok: u64,
    /// Units of work that stopped on a failure.
    pub units_failed: u64,
    /// Per-second timeline, by completion time.
    pub timeline: Vec<Second>,
    /// When the last request completed.
    pub last_done: Option<Instant>,
    /// How late the generator started units against their due time (its own lag, already
    /// inside every latency above; large values mean the generator, not the target, is short).
    pub lag: Histogram<u64>,
    /// Latency of requests since the live view last looked.
    window: Histogram<u64>,
    window_errors: u64,
    window_units: u64,
}

/// The shared recorder.
pub struct Stats {
    inner: Mutex<Recorded>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY.as_micros() as u64, SIGFIG)
        .expect("static histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_LATENCY.as_micros() as u64)
}

/// What the live view shows, since it last looked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Requests completed.
    pub requests: u64,
    /// Units completed.
    pub units: u64,
    /// Failures.
    pub errors: u64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

impl Stats {
    /// A recorder whose timeline starts at `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            inner: Mutex::new(Recorded {
                start,
                kinds: BTreeMap::new(),
                kind_errors: BTreeMap::new(),
                answers: BTreeMap::new(),
                errors: BTreeMap::new(),
                units_ok: 0,
                units_failed: 0,
                timeline: Vec::new(),
                last_done: None,
                lag: histogram(),
                window: histogram(),
                window_errors: 0,
                window_units: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        // A panic while holding the lock leaves plain counters behind: still worth reporting.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one request of type `kind`, charged from `from` (its scheduled time when it is
    /// the first request of a unit) to `done`.
    pub fn record(&self, kind: &'static str, from: Instant, done: Instant, outcome: &Outcome) {
        let us = micros(done.saturating_duration_since(from));
        let mut r = self.lock();
        let sec = done.saturating_duration_since(r.start).as_secs() as usize;
        let rec = &mut *r;
        let _ = rec.kinds.entry(kind).or_insert_with(histogram).record(us);
        let _ = rec.window.record(us);
        let second = second_mut(&mut rec.timeline, sec);
        second.requests += 1;
        let _ = second.latency.record(us);
        match outcome {
            Outcome::Ok => {}
            Outcome::Expected(code) => {
                *rec.answers.entry(format!("{kind} {code}")).or_default() += 1;
            }
            Outcome::Error(code) => {
                second.errors += 1;
                rec.window_errors += 1;
                *rec.kind_errors.entry(kind).or_default() += 1;
                *rec.answers.entry(format!("{kind} {code}")).or_default() += 1;
                *rec.errors.entry(code.clone()).or_default() += 1;
            }
        }
        if rec.last_done.is_none_or(|t| t < done) {
            rec.last_done = Some(done);
        }
    }

    /// Records how late a unit started against its due time.
    pub fn lag(&self, late: Duration) {
        let _ = self.lock().lag.record(micros(late));
    }

    /// Records the end of one unit of work.
    pub fn unit(&self, ok: bool, done: Instant) {
        let mut r = self.lock();
        let sec = done.saturating_duration_since(r.start).as_secs() as usize;
        let rec = &mut *r;
        second_mut(&mut rec.timeline, sec).units += 1;
        rec.window_units += 1;
        if ok {
            rec.units_ok += 1;
        } else {
            rec.units_failed += 1;
        }
    }

    /// Stores a memory sample for the second `at` falls in.
    pub fn rss(&self, at: Instant, kib: u64) {
        let mut r = self.lock();
        let sec = at.saturating_duration_since(r.start).as_secs() as usize;
        second_mut(&mut r.timeline, sec).rss_kib = Some(kib);
    }

    /// Takes the live window: what completed since the last call.
    pub fn take_window(&self) -> Window {
        let mut r = self.lock();
        let w = Window {
            requests: r.window.len(),
            units: r.window_units,
            errors: r.window_errors,
            p99_ms: if r.window.is_empty() {
                0.0
            } else {
                r.window.value_at_quantile(0.99) as f64 / 1000.0
            },
        };
        r.window.reset();
        r.window_errors = 0;
        r.window_units = 0;
        w
    }

    /// Hands the recording over for reporting.
    pub fn finish(self) -> Recorded {
        self.inner.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

fn second_mut(timeline: &mut Vec<Second>, sec: usize) -> &mut Second {
    while timeline.len() <= sec {
        timeline.push(Second {
            requests: 0,
            errors: 0,
            units: 0,
            latency: histogram(),
            rss_kib: None,
        });
    }
    &mut timeline[sec]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_latency_from_the_given_start_and_counts_failures_by_code() {
        let t0 = Instant::now();
        let s = Stats::new(t0);
        // Scheduled at 0, sent late, done at 1.5 s: charged 1.5 s, not the time on the wire.
        s.record("create", t0, t0 + Duration::from_millis(1500), &Outcome::Ok);
        s.record(
            "pay",
            t0,
            t0 + Duration::from_millis(2),
            &Outcome::Expected("409 already_paid".into()),
        );
        s.record(
            "pay",
            t0,
            t0 + Duration::from_millis(3),
            &Outcome::Error("503 overloaded".into()),
        );
        s.unit(true, t0 + Duration::from_millis(1500));
        s.unit(false, t0 + Duration::from_millis(3));
        let r = s.finish();
        let create = &r.kinds["create"];
        assert!(
            (create.max() as i64 - 1_500_000).abs() < 2_000,
            "{}",
            create.max()
        );
        assert_eq!(r.kinds["pay"].len(), 2);
        assert_eq!(r.errors["503 overloaded"], 1);
        assert_eq!(r.answers["pay 409 already_paid"], 1);
        assert_eq!(r.kind_errors["pay"], 1);
        assert_eq!((r.units_ok, r.units_failed), (1, 1));
        assert_eq!(r.timeline.len(), 2);
        assert_eq!(r.timeline[0].requests, 2);
        assert_eq!(r.timeline[0].errors, 1);
        assert_eq!(r.timeline[1].requests, 1);
    }

    #[test]
    fn the_window_resets_each_time_it_is_taken() {
        let t0 = Instant::now();
        let s = Stats::new(t0);
        for ms in 1..=100 {
            s.record("read", t0, t0 + Duration::from_millis(ms), &Outcome::Ok);
        }
        let w = s.take_window();
        assert_eq!(w.requests, 100);
        assert!((w.p99_ms - 99.0).abs() < 0.5, "{}", w.p99_ms);
        assert_eq!(s.take_window().requests, 0);
    }
}
