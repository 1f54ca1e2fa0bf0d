//! `--find-max`: a bounded search for the highest open-loop rate the target holds. Each step
//! runs the scenario at one rate for a few seconds; a step is held when the p99 of every
//! request type charged from its due time stays under the bound, the achieved rate reaches the
//! asked one, and almost nothing failed. Rates grow geometrically until a step fails, then the
//! gap between the last held and the first failed rate is bisected a few times.

use crate::report::Report;
use serde::{Deserialize, Serialize};

/// Request types whose latency is not the target's answer time (they include the simulator's
/// payment delay or polling pauses), left out of the p99 check.
pub const NOT_LATENCY: &[&str] = &["paid", "poll"];
/// Share of the asked rate that must be achieved.
pub const ACHIEVED_SHARE: f64 = 0.95;
/// Largest share of failed or unfinished units a held step may have.
pub const MAX_ERROR_SHARE: f64 = 0.01;

/// One step of the search.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    /// Asked units per second.
    pub rate: f64,
    /// Achieved units per second.
    pub achieved: f64,
    /// Worst p99 among the request types, milliseconds.
    pub p99_ms: f64,
    /// Failed or unfinished share.
    pub error_share: f64,
    /// Whether the step held.
    pub held: bool,
}

/// Judges one step's report against the bound.
pub fn judge(report: &Report, rate: f64, p99_bound_ms: f64) -> Step {
    let p99 = report
        .latency
        .iter()
        .filter(|(k, _)| !NOT_LATENCY.contains(&k.as_str()))
        .map(|(_, l)| l.p99_ms)
        .fold(0.0, f64::max);
    let error_share = report.error_share();
    let held = p99 <= p99_bound_ms
        && report.achieved_rate >= ACHIEVED_SHARE * rate
        && error_share <= MAX_ERROR_SHARE;
    Step {
        rate,
        achieved: report.achieved_rate,
        p99_ms: p99,
        error_share,
        held,
    }
}

/// The search's state: what to try next, given the steps so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// Geometric growth while steps hold.
    pub factor: f64,
    /// Bisections after the first failed step.
    pub refinements: u32,
    /// Most steps in all.
    pub max_steps: usize,
    /// Highest rate ever tried.
    pub ceiling: f64,
}

impl Search {
    /// The next rate to try after `steps` (the first is `start`), or `None` when done.
    pub fn next(&self, start: f64, steps: &[Step]) -> Option<f64> {
        if steps.len() >= self.max_steps {
            return None;
        }
        let Some(last) = steps.last() else {
            return Some(start.min(self.ceiling));
        };
        let best = steps
            .iter()
            .filter(|s| s.held)
            .map(|s| s.rate)
            .reduce(f64::max);
        let worst = steps
            .iter()
            .filter(|s| !s.held)
            .map(|s| s.rate)
            .reduce(f64::min);
        match worst {
            None if last.rate >= self.ceiling => None,
            None => Some((last.rate * self.factor).min(self.ceiling)),
            Some(fail) => {
                let failed_steps = steps.iter().filter(|s| !s.held).count() as u32;
                let held_after = steps
                    .iter()
                    .skip_while(|s| s.held)
                    .filter(|s| s.held)
                    .count() as u32;
                if failed_steps + held_after > self.refinements {
                    return None;
                }
                let lo = best.unwrap_or(0.0);
                let mid = (lo + fail) / 2.0;
                // Not worth a step when the gap is under 5% of the held rate.
                (fail - lo > 0.05 * fail).then_some(mid)
            }
        }
    }

    /// The highest held rate.
    pub fn best(steps: &[Step]) -> Option<&Step> {
        steps
            .iter()
            .filter(|s| s.held)
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, held: bool) -> Step {
        Step {
            rate,
            achieved: rate,
            p99_ms: 1.0,
            error_share: 0.0,
            held,
        }
    }

    fn search() -> Search {
        Search {
            factor: 2.0,
            refinements: 3,
            max_steps: 12,
            ceiling: 1e6,
        }
    }

    #[test]
    fn grows_until_a_step_fails_then_bisects() {
        let s = search();
        let mut steps = vec![];
        assert_eq!(s.next(1000.0, &steps), Some(1000.0));
        steps.push(step(1000.0, true));
        assert_eq!(s.next(1000.0, &steps), Some(2000.0));
        steps.push(step(2000.0, true));
        steps.push(step(4000.0, false));
        assert_eq!(s.next(1000.0, &steps), Some(3000.0));
        steps.push(step(3000.0, true));
        assert_eq!(s.next(1000.0, &steps), Some(3500.0));
        steps.push(step(3500.0, false));
        assert_eq!(s.next(1000.0, &steps), Some(3250.0));
        steps.push(step(3250.0, true));
        assert_eq!(s.next(1000.0, &steps), None, "refinements used up");
        assert_eq!(Search::best(&steps).unwrap().rate, 3250.0);
    }

    #[test]
    fn stops_at_the_ceiling_and_the_step_limit() {
        let s = Search {
            ceiling: 3000.0,
            ..search()
        };
        let steps = vec![step(1000.0, true), step(2000.0, true), step(3000.0, true)];
        assert_eq!(s.next(1000.0, &steps), None);
        let s = Search {
            max_steps: 2,
            ..search()
        };
        assert_eq!(s.next(1000.0, &steps[..2]), None);
    }

    #[test]
    fn a_first_failure_bisects_towards_zero() {
        let steps = vec![step(1000.0, false)];
        assert_eq!(search().next(1000.0, &steps), Some(500.0));
        assert!(Search::best(&steps).is_none());
    }
}
