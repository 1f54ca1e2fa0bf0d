//! Watches another process's resident memory: `VmRSS` from `/proc/<pid>/status`, sampled every
//! second into the run's timeline (Linux only; elsewhere the samples are simply absent).

use crate::stats::Stats;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often memory is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The `VmRSS` line of a `/proc/<pid>/status` text, in KiB.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The current RSS of `pid`, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss_kib(&text)
}

/// Samples `pid` into `stats` every second until aborted.
pub fn watch(pid: u32, stats: Arc<Stats>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Some(kib) = rss_kib(pid) {
                stats.rss(Instant::now(), kib);
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_from_proc_status() {
        let text = "Name:\tpaycore\nVmPeak:\t  900000 kB\nVmRSS:\t  123456 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss_kib(text), Some(123_456));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn our_own_rss_is_readable() {
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }
}
