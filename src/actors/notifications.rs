//! The door of the notification routes: a merchant's notifications for one of its orders, and
//! redelivery. Reads and the redelivery write go to storage (the notifier holds nothing it
//! does not); a redelivery wakes the delivery loop so it goes out at once.

use super::order::OrderError;
use super::orders::Orders;
use crate::domain::notification::Notification;
use crate::domain::{MerchantId, NotificationId, OrderId};
use crate::storage::{NotificationStore, StoreError};
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::Notify;

/// Notification operations for the edge.
#[derive(Clone)]
pub struct Notifications {
    store: Arc<dyn NotificationStore>,
    orders: Orders,
    wake: Arc<Notify>,
}

impl Notifications {
    /// Builds the door; `wake` is the delivery loop's.
    pub fn new(store: Arc<dyn NotificationStore>, orders: Orders, wake: Arc<Notify>) -> Self {
        Self {
            store,
            orders,
            wake,
        }
    }

    /// A merchant's notifications for its order, by version; `NotFound` when the order is not
    /// this merchant's.
    pub async fn for_order(
        &self,
        merchant: &MerchantId,
        order_id: &OrderId,
    ) -> Result<Vec<Notification>, OrderError> {
        self.orders.get(merchant, order_id).await?;
        Ok(self
            .store
            .notifications_for_order(merchant, order_id)
            .await?)
    }

    /// Sends a merchant's notification again (a PENDING one is answered as it is); `None`
    /// when it is not this merchant's.
    pub async fn redeliver(
        &self,
        merchant: &MerchantId,
        id: &NotificationId,
    ) -> Result<Option<Notification>, StoreError> {
        let found = self
            .store
            .redeliver(merchant, id, OffsetDateTime::now_utc())
            .await?;
        if found.is_some() {
            self.wake.notify_one();
        }
        Ok(found)
    }
}
