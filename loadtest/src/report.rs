//! The report of a run, assembled from what was recorded: percentiles per request type, answers
//! and errors by code, asked against achieved rate, and the per-second timeline. Written as JSON
//! and printed as a short table; pure, so its arithmetic is tested without a server.

use crate::stats::Recorded;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// Latency of one request type, milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Requests recorded.
    pub count: u64,
    /// Of which failed.
    pub errors: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of a histogram of microseconds.
    pub fn of(h: &Histogram<u64>, errors: u64) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Self {
                count: 0,
                errors,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
            };
        }
        Self {
            count: h.len(),
            errors,
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecondReport {
    /// Seconds since the start.
    pub t: u64,
    /// Requests completed.
    pub requests: u64,
    /// Units completed.
    pub units: u64,
    /// Failures.
    pub errors: u64,
    /// Median latency of the requests completed in this second.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// RSS of the watched process, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_mib: Option<f64>,
}

/// How the run drove the target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    /// Scenario name.
    pub scenario: String,
    /// `paycore` or `redis-lock`.
    pub target: String,
    /// `open-loop` or `closed-loop`.
    pub mode: String,
    /// Units of work per second asked for (open loop).
    pub asked_rate: Option<f64>,
    /// Concurrent clients (closed loop).
    pub concurrency: Option<usize>,
    /// Units the schedule held.
    pub planned: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// What was run.
    pub run: RunInfo,
    /// Seconds from the start to the last completion.
    pub elapsed_s: f64,
    /// Units of work completed fully.
    pub units_ok: u64,
    /// Units of work that stopped on a failure.
    pub units_failed: u64,
    /// Units never completed (stopped at the run's end).
    pub units_unfinished: u64,
    /// Completed units (ok or not) per second of elapsed time.
    pub achieved_rate: f64,
    /// Successful units per second.
    pub ok_rate: f64,
    /// Requests per second, every type together.
    pub requests_per_s: f64,
    /// Latency per request type.
    pub latency: BTreeMap<String, Latency>,
    /// Non-success answers, "type status code" to count (expected ones included).
    pub answers: BTreeMap<String, u64>,
    /// Failures by code.
    pub errors: BTreeMap<String, u64>,
    /// How late the generator itself started units (open loop): its own share of the latency.
    pub generator_lag: Latency,
    /// Per-second timeline.
    pub timeline: Vec<SecondReport>,
    /// CPU of the watched processes (`--cpu-pid`) over the run, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu: BTreeMap<String, crate::cpu::CpuUse>,
}

impl Report {
    /// Assembles the report. `end` is when the run stopped (the last completion, or the drain
    /// deadline when requests were left unfinished).
    pub fn assemble(run: RunInfo, rec: &Recorded, end: Instant) -> Self {
        let end = rec.last_done.map_or(end, |t| t.max(end));
        let elapsed = end
            .saturating_duration_since(rec.start)
            .as_secs_f64()
            .max(1e-9);
        let done = rec.units_ok + rec.units_failed;
        let requests: u64 = rec.kinds.values().map(|h| h.len()).sum();
        let latency = rec
            .kinds
            .iter()
            .map(|(k, h)| {
                let errors = rec.kind_errors.get(k).copied().unwrap_or(0);
                (k.to_string(), Latency::of(h, errors))
            })
            .collect();
        let timeline = rec
            .timeline
            .iter()
            .enumerate()
            .map(|(t, s)| {
                let l = Latency::of(&s.latency, s.errors);
                SecondReport {
                    t: t as u64,
                    requests: s.requests,
                    units: s.units,
                    errors: s.errors,
                    p50_ms: l.p50_ms,
                    p99_ms: l.p99_ms,
                    max_ms: l.max_ms,
                    rss_mib: s.rss_kib.map(|k| k as f64 / 1024.0),
                }
            })
            .collect();
        Self {
            units_unfinished: run.planned.saturating_sub(done),
            run,
            elapsed_s: elapsed,
            units_ok: rec.units_ok,
            units_failed: rec.units_failed,
            achieved_rate: done as f64 / elapsed,
            ok_rate: rec.units_ok as f64 / elapsed,
            requests_per_s: requests as f64 / elapsed,
            latency,
            answers: rec.answers.clone(),
            errors: rec.errors.clone(),
            generator_lag: Latency::of(&rec.lag, 0),
            timeline,
            cpu: BTreeMap::new(),
        }
    }

    /// Failed or unfinished units as a share of the planned ones.
    pub fn error_share(&self) -> f64 {
        let bad = self.units_failed + self.units_unfinished;
        bad as f64 / (self.units_ok + bad).max(1) as f64
    }

    /// Highest RSS seen, MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.timeline
            .iter()
            .filter_map(|s| s.rss_mib)
            .reduce(f64::max)
    }

    /// The report as a human-readable table.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let r = &self.run;
        let mut out = String::new();
        let how = match (r.asked_rate, r.concurrency) {
            (Some(rate), _) => format!("asked {rate:.0} units/s"),
            (None, Some(c)) => format!("{c} concurrent clients"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{} against {} ({}, {how}): {} ok, {} failed, {} unfinished in {:.1} s",
            r.scenario,
            r.target,
            r.mode,
            self.units_ok,
            self.units_failed,
            self.units_unfinished,
            self.elapsed_s
        );
        let _ = writeln!(
            out,
            "achieved {:.0} units/s ({:.0} ok/s), {:.0} requests/s",
            self.achieved_rate, self.ok_rate, self.requests_per_s
        );
        let _ = writeln!(
            out,
            "{:<10} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "request", "count", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for (k, l) in &self.latency {
            let _ = writeln!(
                out,
                "{k:<10} {:>9} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                l.count, l.errors, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
        }
        if self.generator_lag.count > 0 {
            let g = &self.generator_lag;
            let _ = writeln!(
                out,
                "generator lag (start vs due, inside the latencies above): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                g.p50_ms, g.p99_ms, g.max_ms
            );
        }
        if !self.answers.is_empty() {
            let list: Vec<String> = self
                .answers
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let _ = writeln!(out, "answers other than success: {}", list.join(", "));
        }
        if !self.errors.is_empty() {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let _ = writeln!(out, "errors by code: {}", list.join(", "));
        }
        if let Some(peak) = self.peak_rss_mib() {
            let _ = writeln!(out, "peak RSS of the watched process: {peak:.1} MiB");
        }
        if !self.cpu.is_empty() {
            let list: Vec<String> = self
                .cpu
                .iter()
                .map(|(name, c)| match c.us_per_unit {
                    Some(us) => format!("{name} {us:.0} µs ({:.2} s)", c.cpu_s),
                    None => format!("{name} {:.2} s", c.cpu_s),
                })
                .collect();
            let _ = writeln!(out, "CPU per ok unit: {}", list.join(", "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Outcome, Stats};
    use std::time::Duration;

    fn info(planned: u64) -> RunInfo {
        RunInfo {
            scenario: "create".into(),
            target: "paycore".into(),
            mode: "open-loop".into(),
            asked_rate: Some(100.0),
            concurrency: None,
            planned,
        }
    }

    #[test]
    fn percentiles_rates_and_errors_are_assembled() {
        let t0 = Instant::now();
        let s = Stats::new(t0);
        // 200 requests: 1..=200 ms latency, spread over two seconds of completions.
        for i in 1..=200u64 {
            let done = t0 + Duration::from_millis(i * 10);
            let outcome = if i % 50 == 0 {
                Outcome::Error("503 overloaded".into())
            } else {
                Outcome::Ok
            };
            s.record("create", done - Duration::from_millis(i), done, &outcome);
            s.unit(outcome == Outcome::Ok, done);
        }
        let rec = s.finish();
        let r = Report::assemble(info(210), &rec, t0 + Duration::from_secs(2));
        let l = &r.latency["create"];
        assert_eq!(l.count, 200);
        assert_eq!(l.errors, 4);
        assert!((l.p50_ms - 100.0).abs() < 0.5, "{}", l.p50_ms);
        assert!((l.p90_ms - 180.0).abs() < 0.5, "{}", l.p90_ms);
        assert!((l.p99_ms - 198.0).abs() < 0.5, "{}", l.p99_ms);
        assert!((l.max_ms - 200.0).abs() < 0.5, "{}", l.max_ms);
        assert_eq!(
            (r.units_ok, r.units_failed, r.units_unfinished),
            (196, 4, 10)
        );
        assert!((r.achieved_rate - 100.0).abs() < 0.1, "{}", r.achieved_rate);
        assert!((r.error_share() - 14.0 / 210.0).abs() < 1e-9);
        assert_eq!(r.errors["503 overloaded"], 4);
        assert_eq!(r.timeline.len(), 3);
        assert_eq!(r.timeline.iter().map(|s| s.requests).sum::<u64>(), 200);
        let text = r.render();
        assert!(text.contains("create"), "{text}");
        assert!(text.contains("503 overloaded: 4"), "{text}");
        let json = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn an_empty_run_reports_zeros_not_nan() {
        let t0 = Instant::now();
        let rec = Stats::new(t0).finish();
        let r = Report::assemble(info(5), &rec, t0 + Duration::from_secs(1));
        assert_eq!(r.achieved_rate, 0.0);
        assert_eq!(r.units_unfinished, 5);
        assert_eq!(r.error_share(), 1.0);
        assert!(r.latency.is_empty());
    }
}
