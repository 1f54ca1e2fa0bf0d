//! CPU time of other processes (paycore, the simulator): `utime + stime` from
//! `/proc/<pid>/stat`, read at the start and the end of a run, so that a report can say how many
//! µs of each process's CPU one unit of work cost (Linux only; elsewhere the figures are absent).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A named process to watch, as given on the command line (`NAME=PID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// What the report calls it.
    pub name: String,
    /// Its pid.
    pub pid: u32,
}

impl std::str::FromStr for Watched {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, pid) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=PID"))?;
        let pid = pid
            .parse::<u32>()
            .map_err(|e| format!("{s:?}: the pid is not a number ({e})"))?;
        if name.is_empty() {
            return Err(format!("{s:?}: the name is empty"));
        }
        Ok(Self {
            name: name.to_string(),
            pid,
        })
    }
}

/// One process's CPU over a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CpuUse {
    /// Its pid.
    pub pid: u32,
    /// User plus system CPU seconds over the run.
    pub cpu_s: f64,
    /// µs of its CPU per successful unit.
    pub us_per_unit: Option<f64>,
}

/// `utime + stime` in clock ticks from a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces, so fields are counted after its closing one.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second of `/proc` times.
fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU seconds `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&text).map(|t| t as f64 / ticks_per_sec())
}

/// The readings at a run's start.
pub struct Start(Vec<(Watched, Option<f64>)>);

/// Reads every watched process's CPU now.
pub fn start(watched: &[Watched]) -> Start {
    Start(
        watched
            .iter()
            .map(|w| (w.clone(), cpu_seconds(w.pid)))
            .collect(),
    )
}

impl Start {
    /// Each process's CPU since the start, per successful unit of `units_ok`. A process that
    /// could not be read (gone, or not Linux) is left out.
    pub fn finish(self, units_ok: u64) -> BTreeMap<String, CpuUse> {
        self.0
            .into_iter()
            .filter_map(|(w, before)| {
                let used = (cpu_seconds(w.pid)? - before?).max(0.0);
                Some((w.name, usage(w.pid, used, units_ok)))
            })
            .collect()
    }
}

fn usage(pid: u32, cpu_s: f64, units_ok: u64) -> CpuUse {
    CpuUse {
        pid,
        cpu_s,
        us_per_unit: (units_ok > 0).then(|| cpu_s * 1e6 / units_ok as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_ticks_after_a_name_with_spaces() {
        let stat = "4242 (tokio rt) worker) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_stat_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn watched_processes_are_name_equals_pid() {
        assert_eq!(
            "paycore=123".parse::<Watched>(),
            Ok(Watched {
                name: "paycore".into(),
                pid: 123
            })
        );
        assert!("paycore".parse::<Watched>().is_err());
        assert!("=123".parse::<Watched>().is_err());
        assert!("paycore=abc".parse::<Watched>().is_err());
    }

    #[test]
    fn our_own_cpu_grows_while_we_work_and_is_divided_by_units() {
        let me = Watched {
            name: "self".into(),
            pid: std::process::id(),
        };
        let s = start(std::slice::from_ref(&me));
        let before = cpu_seconds(me.pid).unwrap();
        // Busy until the process has used 50 ms more (bounded in wall time on a busy machine).
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_seconds(me.pid).unwrap() - before < 0.05
            && t.elapsed() < std::time::Duration::from_secs(20)
        {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let used = s.finish(1_000);
        let u = &used["self"];
        assert!(u.cpu_s >= 0.05, "{u:?}");
        let per = u.us_per_unit.unwrap();
        assert!((per - u.cpu_s * 1e3).abs() < 1e-6, "{u:?}");
        assert_eq!(usage(1, 1.0, 0).us_per_unit, None);
    }
}
