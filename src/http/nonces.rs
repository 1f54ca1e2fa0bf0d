//! Replay protection: every nonce a merchant used inside the replay window is remembered
//! exactly, in buckets keyed by the request's own timestamp. A replay carries the same signed
//! timestamp, so it lands in the same bucket; a bucket is dropped once its timestamps fall out
//! of the window, when the window check refuses them anyway. When `capacity` nonces are held,
//! new requests are refused (503) rather than forgetting old nonces: failing closed keeps
//! replays out, and the bound keeps memory flat. Each merchant has its own guard, so one
//! merchant's traffic never takes another's room.

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

/// Width of one bucket, seconds.
pub(crate) const BUCKET_SECS: i64 = 10;

/// Why a nonce was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceError {
    /// Seen before inside the window.
    Replayed,
    /// The guard holds `capacity` nonces.
    Full,
}

/// Remembers nonces for the replay window.
pub struct NonceGuard {
    window_secs: i64,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    buckets: BTreeMap<i64, HashSet<u128>>,
    len: usize,
}

fn key(nonce: &str) -> u128 {
    let mut h = Sha256::new();
    h.update(nonce.as_bytes());
    let d = h.finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    u128::from_le_bytes(k)
}

impl NonceGuard {
    /// A guard for a window of `window_secs` holding at most `capacity` nonces.
    pub fn new(window_secs: i64, capacity: usize) -> Self {
        Self {
            window_secs,
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Records the nonce of a request signed at `timestamp`, received at `now`; refuses a
    /// nonce already seen. Call only for requests whose signature and window checked out.
    pub fn check_and_record(
        &self,
        nonce: &str,
        timestamp: i64,
        now: i64,
    ) -> Result<(), NonceError> {
        let k = key(nonce);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Drop buckets whose newest timestamp is older than the window allows.
        let oldest_live = (now - self.window_secs).div_euclid(BUCKET_SECS);
        while let Some((&b, _)) = inner.buckets.first_key_value() {
            if b >= oldest_live {
                break;
            }
            if let Some(set) = inner.buckets.remove(&b) {
                inner.len -= set.len();
            }
        }
        let bucket = timestamp.div_euclid(BUCKET_SECS);
        if inner.buckets.get(&bucket).is_some_and(|s| s.contains(&k)) {
            return Err(NonceError::Replayed);
        }
        if inner.len >= self.capacity {
            return Err(NonceError::Full);
        }
        inner.buckets.entry(bucket).or_default().insert(k);
        inner.len += 1;
        Ok(())
    }

    /// Nonces held.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.len).unwrap_or(0)
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_inside_the_window_are_refused() {
        let g = NonceGuard::new(300, 100);
        assert_eq!(g.check_and_record("n1", 1000, 1000), Ok(()));
        assert_eq!(
            g.check_and_record("n1", 1000, 1200),
            Err(NonceError::Replayed)
        );
        assert_eq!(g.check_and_record("n2", 1000, 1200), Ok(()));
    }

    #[test]
    fn buckets_leave_with_the_window_and_memory_stays_bounded() {
        let g = NonceGuard::new(300, 1_000);
        for i in 0..10_000i64 {
            // One request a second for 10,000 seconds: at most ~310 s of nonces are held.
            assert_eq!(g.check_and_record(&format!("n{i}"), i, i), Ok(()));
            assert!(g.len() <= 320, "held {} at t={i}", g.len());
        }
    }

    #[test]
    fn a_full_guard_fails_closed() {
        let g = NonceGuard::new(300, 3);
        for n in ["a", "b", "c"] {
            assert_eq!(g.check_and_record(n, 0, 0), Ok(()));
        }
        assert_eq!(g.check_and_record("d", 0, 0), Err(NonceError::Full));
        assert_eq!(
            g.check_and_record("a", 0, 0),
            Err(NonceError::Replayed),
            "old nonces are not forgotten"
        );
        // Once the window moves on, room comes back.
        assert_eq!(g.check_and_record("d", 400, 400), Ok(()));
    }
}
