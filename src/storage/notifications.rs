//! The notifier's storage: its rows (one per notification, with its delivery state) and its
//! outbox cursor. Kept apart from `OrderStore` because only the notifier and the notification
//! routes use it; a backend implements both. Every write is acknowledged only once durable, like
//! every other write.

use super::StoreError;
use crate::domain::notification::{DeliveryOutcome, Notification};
use crate::domain::{MerchantId, NotificationId, OrderId};
use async_trait::async_trait;
use time::OffsetDateTime;

/// How many more deliveries each merchant may start: the per-merchant bound and what is in
/// flight now. A merchant at the bound is *saturated*: none of its notifications is claimed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerchantRoom {
    /// Most deliveries in flight to one merchant.
    pub per_merchant: usize,
    /// Merchants with deliveries in flight, and how many.
    pub in_flight: Vec<(MerchantId, usize)>,
}

impl MerchantRoom {
    /// Merchants that may start no delivery now.
    pub fn saturated(&self) -> impl Iterator<Item = &MerchantId> {
        self.in_flight
            .iter()
            .filter(|(_, n)| *n >= self.per_merchant)
            .map(|(m, _)| m)
    }

    /// How many deliveries `merchant` may start now.
    pub fn room_for(&self, merchant: &str) -> usize {
        let busy = self
            .in_flight
            .iter()
            .find(|(m, _)| m.as_str() == merchant)
            .map_or(0, |(_, n)| *n);
        self.per_merchant.saturating_sub(busy)
    }
}

/// Everything paycore stores about merchant notifications.
#[async_trait]
pub trait NotificationStore: Send + Sync + 'static {
    /// Stores the notifications (one already stored, by id, is left as it is) and moves the
    /// consumer's cursor in log partition `partition` to `seq`, in one transaction: a crash before it redoes both, after it
    /// neither.
    async fn enqueue_notifications(
        &self,
        rows: Vec<Notification>,
        cursor_name: &str,
        partition: u32,
        seq: u64,
    ) -> Result<(), StoreError>;

    /// Takes up to `limit` PENDING notifications due at `now`, earliest first, none of a
    /// saturated merchant and no more of a merchant than its room, and none with an earlier
    /// version of its order still PENDING (so one order's notifications go out in version
    /// order; a DEAD one no longer holds the later ones). They are leased in the same write:
    /// due again at `lease_until`, so an attempt lost in a crash is made again then.
    async fn claim_due_notifications(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
        room: &MerchantRoom,
    ) -> Result<Vec<Notification>, StoreError>;

    /// Records an attempt's outcome on a notification claimed with `claimed_attempts`
    /// attempts: counts the attempt and makes it DELIVERED, due again, or DEAD. A notification
    /// that changed since it was claimed is left alone.
    async fn record_delivery(
        &self,
        id: &NotificationId,
        claimed_attempts: u32,
        outcome: DeliveryOutcome,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Makes a merchant's DELIVERED or DEAD notification PENDING again, due `now`, from the
    /// start of the schedule (a PENDING one is left as it is); answers it, or `None` when it is
    /// not this merchant's.
    async fn redeliver(
        &self,
        merchant: &MerchantId,
        id: &NotificationId,
        now: OffsetDateTime,
    ) -> Result<Option<Notification>, StoreError>;

    /// A merchant's notifications for one order, by version.
    async fn notifications_for_order(
        &self,
        merchant: &MerchantId,
        order_id: &OrderId,
    ) -> Result<Vec<Notification>, StoreError>;

    /// Notifications PENDING now.
    async fn pending_notifications(&self) -> Result<i64, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_the_bound_less_what_is_in_flight() {
        let m = |s: &str| MerchantId::parse(s).unwrap();
        let room = MerchantRoom {
            per_merchant: 2,
            in_flight: vec![(m("a"), 2), (m("b"), 1)],
        };
        assert_eq!(room.saturated().collect::<Vec<_>>(), vec![&m("a")]);
        assert_eq!(
            (room.room_for("a"), room.room_for("b"), room.room_for("c")),
            (0, 1, 2)
        );
    }
}
