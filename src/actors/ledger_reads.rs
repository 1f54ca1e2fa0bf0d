//! The door of the ledger routes: an order's ledger transactions (only for the order's own
//! merchant) and a merchant's account balances. Reads only; the ledger consumer is the one
//! writer of the ledger.

use super::order::OrderError;
use super::orders::Orders;
use crate::domain::ledger::AccountBalance;
use crate::domain::{MerchantId, OrderId};
use crate::storage::{BookedTxn, LedgerStore, StoreError};
use std::sync::Arc;

/// Ledger reads for the edge.
#[derive(Clone)]
pub struct LedgerReads {
    store: Arc<dyn LedgerStore>,
    orders: Orders,
}

impl LedgerReads {
    /// Builds the door.
    pub fn new(store: Arc<dyn LedgerStore>, orders: Orders) -> Self {
        Self { store, orders }
    }

    /// The ledger transactions booked for a merchant's order, in the order booked; `NotFound`
    /// when the order is not this merchant's.
    pub async fn for_order(
        &self,
        merchant: &MerchantId,
        order_id: &OrderId,
    ) -> Result<Vec<BookedTxn>, OrderError> {
        self.orders.get(merchant, order_id).await?;
        Ok(self.store.order_ledger(order_id).await?)
    }

    /// The balances of a merchant's accounts.
    pub async fn balances(&self, merchant: &MerchantId) -> Result<Vec<AccountBalance>, StoreError> {
        self.store.merchant_balances(merchant).await
    }
}
