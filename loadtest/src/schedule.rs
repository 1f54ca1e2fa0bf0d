//! The arrival schedule of an open-loop run: when the i-th request is due, counted from the
//! start, at a constant or linearly ramped rate, bounded by a count and a duration. The schedule
//! never looks at answers, so a stalled server cannot slow the arrivals down; latency is measured
//! from the due time this module gives, never from when the request was actually sent.

use std::time::Duration;

/// How fast arrivals come.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// The same number of arrivals every second.
    Constant(f64),
    /// A rate going linearly from `from` to `to` over the schedule's duration.
    Ramp {
        /// Arrivals per second at the start.
        from: f64,
        /// Arrivals per second at the end.
        to: f64,
    },
}

/// Arrivals at a rate, stopped by whichever comes first of a count and a duration.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    rate: Rate,
    duration: Duration,
    count: u64,
}

impl Schedule {
    /// A schedule; refuses rates that are not positive and finite, and an empty duration.
    pub fn new(rate: Rate, duration: Duration, count: u64) -> Result<Self, String> {
        let ok = |r: f64| r.is_finite() && r >= 0.0;
        match rate {
            Rate::Constant(r) if !ok(r) || r == 0.0 => {
                return Err(format!("rate must be a positive number, got {r}"));
            }
            Rate::Ramp { from, to } if !ok(from) || !ok(to) || from + to == 0.0 => {
                return Err(format!(
                    "ramp rates must be >= 0 and not both 0, got {from}..{to}"
                ));
            }
            _ => {}
        }
        if duration.is_zero() {
            return Err("duration must be positive".into());
        }
        Ok(Self {
            rate,
            duration,
            count,
        })
    }

    /// When the `i`-th arrival (from 0) is due, counted from the start; `None` once the count or
    /// the duration is exhausted.
    pub fn offset(&self, i: u64) -> Option<Duration> {
        if i >= self.count {
            return None;
        }
        let n = i as f64;
        let t = match self.rate {
            Rate::Constant(r) => n / r,
            Rate::Ramp { from, to } => {
                // Arrivals by time t: N(t) = from*t + slope*t^2/2; solve N(t) = n for t.
                let slope = (to - from) / self.duration.as_secs_f64();
                if slope.abs() < 1e-12 {
                    n / from
                } else {
                    let disc = from * from + 2.0 * slope * n;
                    if disc < 0.0 {
                        return None; // a falling ramp reached zero before n arrivals
                    }
                    (disc.sqrt() - from) / slope
                }
            }
        };
        (t.is_finite() && t >= 0.0 && t < self.duration.as_secs_f64())
            .then(|| Duration::from_secs_f64(t))
    }

    /// How many arrivals the schedule holds.
    pub fn planned(&self) -> u64 {
        let secs = self.duration.as_secs_f64();
        let by_time = match self.rate {
            Rate::Constant(r) => r * secs,
            Rate::Ramp { from, to } => (from + to) / 2.0 * secs,
        };
        // N(t) counts arrivals strictly before t, plus the one at 0.
        let by_time = by_time.ceil() as u64;
        let mut n = by_time.min(self.count);
        // Rounding at the edge: trust `offset`, which is what the driver uses.
        while n > 0 && self.offset(n - 1).is_none() {
            n -= 1;
        }
        while self.offset(n).is_some() {
            n += 1;
        }
        n
    }

    /// The mean rate asked for, arrivals per second.
    pub fn asked_rate(&self) -> f64 {
        match self.rate {
            Rate::Constant(r) => r,
            Rate::Ramp { from, to } => (from + to) / 2.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_rate_spaces_arrivals_evenly_from_zero() {
        let s = Schedule::new(Rate::Constant(1000.0), Duration::from_secs(2), u64::MAX).unwrap();
        assert_eq!(s.offset(0), Some(Duration::ZERO));
        assert_eq!(s.offset(1), Some(Duration::from_millis(1)));
        assert_eq!(s.offset(1500), Some(Duration::from_millis(1500)));
        assert_eq!(s.offset(2000), None, "the duration bounds the run");
        assert_eq!(s.planned(), 2000);
    }

    #[test]
    fn the_count_bounds_the_run_before_the_duration() {
        let s = Schedule::new(Rate::Constant(100.0), Duration::from_secs(60), 10).unwrap();
        assert_eq!(s.planned(), 10);
        assert!(s.offset(9).is_some());
        assert!(s.offset(10).is_none());
    }

    #[test]
    fn ramp_arrivals_speed_up_and_total_the_mean_rate() {
        let s = Schedule::new(
            Rate::Ramp {
                from: 100.0,
                to: 300.0,
            },
            Duration::from_secs(10),
            u64::MAX,
        )
        .unwrap();
        let planned = s.planned();
        assert!((1999..=2001).contains(&planned), "{planned}");
        let gap = |i: u64| s.offset(i + 1).unwrap() - s.offset(i).unwrap();
        assert!(gap(10) > gap(1900), "arrivals get closer together");
        // Near the start the gap is 1/100 s, near the end about 1/300 s.
        assert!((gap(0).as_secs_f64() - 0.01).abs() < 0.001);
        assert!((gap(1990).as_secs_f64() - 1.0 / 300.0).abs() < 0.0005);
    }

    #[test]
    fn offsets_never_depend_on_answers_so_a_stall_cannot_hide() {
        // The schedule is a pure function of the index: whatever happened to earlier requests,
        // the 500th is due at 0.5 s, so a request sent late after a stall is charged from 0.5 s.
        let s = Schedule::new(Rate::Constant(1000.0), Duration::from_secs(1), u64::MAX).unwrap();
        let due: Vec<_> = (0..1000).map(|i| s.offset(i).unwrap()).collect();
        assert!(due.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(due[500], Duration::from_millis(500));
    }

    #[test]
    fn bad_rates_are_refused() {
        let d = Duration::from_secs(1);
        assert!(Schedule::new(Rate::Constant(0.0), d, 1).is_err());
        assert!(Schedule::new(Rate::Constant(f64::NAN), d, 1).is_err());
        assert!(Schedule::new(Rate::Ramp { from: 0.0, to: 0.0 }, d, 1).is_err());
        assert!(Schedule::new(Rate::Constant(1.0), Duration::ZERO, 1).is_err());
    }
}
