//! A bounded cache of acknowledged order states. Only states that storage committed go in (after
//! a create or an actor's update succeeded, or after a read from storage), and an older version
//! never replaces a newer one, so a hit is always an acknowledged state. Reads and actor start-up
//! use it to skip a SQLite read and a JSON decode; a miss falls back to storage.
//!
//! Sharded LRU maps behind plain mutexes: every operation is O(1) with no background
//! housekeeping, so no caller ever pays for someone else's eviction work (an evicting cache with
//! deferred maintenance showed 50-200 ms stalls on the create path under load).

use crate::domain::{Order, OrderId};
use lru::LruCache;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// Independent shards, so concurrent callers rarely meet on one lock.
const SHARDS: usize = 16;

/// One shard: least recently used orders go first, and a count of the commits recorded in it.
/// A read from storage takes the count before it reads and may fill the cache only if no commit
/// came in between: otherwise a state read just before an actor's write, and filled after that
/// write's entry was evicted, would put an older version back.
struct Shard {
    lru: LruCache<OrderId, Arc<Order>>,
    commits: u64,
}

/// Taken before a storage read; lets `fill` know whether a commit raced the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTicket(u64);

/// Cache of committed orders by id.
#[derive(Clone)]
pub struct OrderCache {
    shards: Arc<Vec<Mutex<Shard>>>,
    hasher: RandomState,
}

impl OrderCache {
    /// A cache holding at most about `capacity` orders (0 disables it).
    pub fn new(capacity: u64) -> Self {
        let per_shard = (capacity as usize).div_ceil(SHARDS);
        let shards = match NonZeroUsize::new(per_shard) {
            Some(n) => (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        lru: LruCache::new(n),
                        commits: 0,
                    })
                })
                .collect(),
            None => Vec::new(),
        };
        Self {
            shards: Arc::new(shards),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, id: &OrderId) -> Option<std::sync::MutexGuard<'_, Shard>> {
        if self.shards.is_empty() {
            return None;
        }
        let i = (self.hasher.hash_one(id) as usize) % self.shards.len();
        Some(self.shards[i].lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The cached state of an order, if any.
    pub fn get(&self, id: &OrderId) -> Option<Arc<Order>> {
        self.shard(id)?.lru.get(id).cloned()
    }

    /// Records a state storage has just committed (by a create or the order's actor); keeps
    /// whichever version is newer.
    pub fn committed(&self, order: &Order) {
        let Some(mut shard) = self.shard(&order.order_id) else {
            return;
        };
        shard.commits = shard.commits.wrapping_add(1);
        put_newer(&mut shard.lru, order);
    }

    /// Take before reading an order from storage; pass to `fill` with what was read.
    pub fn ticket(&self, id: &OrderId) -> ReadTicket {
        ReadTicket(self.shard(id).map(|s| s.commits).unwrap_or(0))
    }

    /// Caches a state read from storage, unless a commit was recorded since the ticket was
    /// taken (the read may predate it).
    pub fn fill(&self, order: &Order, ticket: ReadTicket) {
        let Some(mut shard) = self.shard(&order.order_id) else {
            return;
        };
        if shard.commits == ticket.0 {
            put_newer(&mut shard.lru, order);
        }
    }

    /// Drops an order whose stored state is in doubt.
    pub fn forget(&self, id: &OrderId) {
        if let Some(mut shard) = self.shard(id) {
            shard.commits = shard.commits.wrapping_add(1);
            shard.lru.pop(id);
        }
    }
}

fn put_newer(lru: &mut LruCache<OrderId, Arc<Order>>, order: &Order) {
    if lru
        .peek(&order.order_id)
        .is_some_and(|o| o.version >= order.version)
    {
        return;
    }
    lru.put(order.order_id.clone(), Arc::new(order.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;

    fn order() -> Order {
        let new = NewOrder::for_test("m", "n", 1);
        Order::create(OrderId::generate(), new, time::OffsetDateTime::now_utc()).0
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one() {
        let cache = OrderCache::new(10);
        let v1 = order();
        let mut v2 = v1.clone();
        v2.version = 2;
        v2.status = OrderStatus::Closed;
        cache.committed(&v2);
        cache.committed(&v1);
        assert_eq!(cache.get(&v1.order_id).map(|o| o.version), Some(2));
        cache.forget(&v1.order_id);
        assert!(cache.get(&v1.order_id).is_none());
        cache.committed(&v1);
        assert_eq!(cache.get(&v1.order_id).map(|o| o.version), Some(1));
    }

    /// A reader loads v1 from storage; meanwhile the actor commits v2, and v2 is evicted. The
    /// reader's fill must not put v1 back: the next reader would see an order older than what
    /// a caller was already told.
    #[test]
    fn a_read_that_raced_a_commit_never_refills_an_older_version() {
        let cache = OrderCache::new(1); // one entry per shard: easy to evict
        let v1 = order();
        let ticket = cache.ticket(&v1.order_id);
        let mut v2 = v1.clone();
        v2.version = 2;
        cache.committed(&v2);
        // Other orders read into the cache evict v2 (one entry per shard).
        for _ in 0..200 {
            let other = order();
            cache.fill(&other, cache.ticket(&other.order_id));
        }
        assert!(cache.get(&v1.order_id).is_none(), "v2 was evicted");
        cache.fill(&v1, ticket);
        assert!(cache.get(&v1.order_id).is_none(), "stale v1 was refilled");
        // A read that no commit raced fills normally.
        let fresh = cache.ticket(&v1.order_id);
        cache.fill(&v2, fresh);
        assert_eq!(cache.get(&v1.order_id).map(|o| o.version), Some(2));
    }

    #[test]
    fn capacity_is_a_bound_and_zero_disables() {
        let cache = OrderCache::new(32);
        let orders: Vec<Order> = (0..1000).map(|_| order()).collect();
        for o in &orders {
            cache.committed(o);
        }
        let held = orders
            .iter()
            .filter(|o| cache.get(&o.order_id).is_some())
            .count();
        assert!(held <= 32, "held {held}");
        let off = OrderCache::new(0);
        off.committed(&orders[0]);
        assert!(off.get(&orders[0].order_id).is_none());
    }
}
