//! The actor system: a root supervisor over one channel actor per payment channel and the order
//! registry, which supervises one actor per live order. `orders::Orders` is its front door;
//! beside the tree run the timer scheduler, the merchant notifier (`notifications::
//! Notifications` is the notification routes' door) and the ledger consumer (`ledger_reads::
//! LedgerReads` is the ledger routes' door; `ledger_verify` reconciles the ledger for operators).

pub mod channel;
pub mod ledger;
pub mod ledger_reads;
pub mod ledger_verify;
pub mod notifications;
pub mod notifier;
mod notifier_delivery;
pub mod order;
pub mod order_cache;
mod order_fulfill;
mod order_settle;
pub mod orders;
pub mod registry;
pub mod scheduler;
pub mod supervisor;

#[cfg(test)]
mod supervision_tests;

pub use ledger_reads::LedgerReads;
pub use notifications::Notifications;
pub use order::{CommandAnswer, OrderError, PayRequest};
pub use orders::{CommandKey, Orders};
