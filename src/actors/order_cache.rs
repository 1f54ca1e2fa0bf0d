//! A bounded cache of acknowledged order states. Only states that storage committed go in (after
//! a create or an actor's update succeeded, or after a read from storage), and an older version
//! never replaces a newer one, so a hit is always an acknowledged state. Reads and actor start-up
//! use it to skip a SQLite read and a JSON decode; a miss falls back to storage.

use crate::domain::{Order, OrderId};
use moka::ops::compute::Op;
use std::sync::Arc;

/// Cache of committed orders by id.
#[derive(Clone)]
pub struct OrderCache {
    inner: moka::sync::Cache<OrderId, Arc<Order>>,
}

impl OrderCache {
    /// A cache holding at most `capacity` orders (0 disables it).
    pub fn new(capacity: u64) -> Self {
        Self {
            inner: moka::sync::Cache::builder().max_capacity(capacity).build(),
        }
    }

    /// The cached state of an order, if any.
    pub fn get(&self, id: &OrderId) -> Option<Arc<Order>> {
        self.inner.get(id)
    }

    /// Records a state storage has committed; keeps whichever version is newer.
    pub fn committed(&self, order: &Order) {
        let version = order.version;
        self.inner
            .entry(order.order_id.clone())
            .and_compute_with(|existing| match existing {
                Some(e) if e.value().version >= version => Op::Nop,
                _ => Op::Put(Arc::new(order.clone())),
            });
    }

    /// Drops an order whose stored state is in doubt.
    pub fn forget(&self, id: &OrderId) {
        self.inner.invalidate(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;

    fn order() -> Order {
        let new = NewOrder {
            merchant_id: MerchantId::parse("m").unwrap(),
            merchant_order_no: MerchantOrderNo::parse("n").unwrap(),
            amount: Amount::new(1).unwrap(),
            currency: Currency::Cny,
            business_type: BusinessType::BillBuy,
            channel: "sim".into(),
            subject: None,
            notify_url: None,
            expire_seconds: 900,
        };
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
}
