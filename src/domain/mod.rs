//! Pure types and rules: money, ids, the order and its state machine, events, merchant
//! notifications, ledger postings, request signing, the address rule for notify URLs. No I/O, no async, no actor
//! types; nothing here depends on another module of paycore.

pub mod address;
pub mod event;
pub mod ids;
pub mod ledger;
pub mod ledger_account;
pub mod ledger_audit;
pub mod ledger_book;
pub mod money;
pub mod notification;
pub mod order;
pub mod payment;
pub mod refund;
pub mod signing;
pub mod submit_token;
pub mod timer;
pub mod view;

pub use address::AddressPolicy;
pub use event::{Change, ChangeKind, EVENT_TYPES, Event};
pub use ids::{
    EventId, IdError, MerchantId, MerchantOrderNo, NotificationId, OrderId, PaySerialNo, RefundId,
    RefundNo, RequestId, SubmitToken,
};
pub use money::{Amount, Currency, MoneyError};
pub use order::{
    BusinessType, CloseStep, Command, FulfillmentOutcome, FulfillmentStatus, NewOrder, Order,
    OrderStatus, PayMethod, PayStep, Rejection,
};
pub use payment::{ChannelPayment, ExtraReason, PaymentRole, ReportedPayment};
pub use refund::{Refund, RefundOutcome, RefundRequest, RefundStatus};
pub use submit_token::{TokenCheck, TokenKey};
pub use timer::{Schedule, Timer, TimerKind, TimerOp};
