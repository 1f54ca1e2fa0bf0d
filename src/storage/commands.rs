//! Stored replies of Kafka commands, keyed by (merchant, request id): what makes a redelivered
//! command answer the same without a second effect, and the order writes that store a reply
//! with their change. Part of `OrderStore`; kept in a trait of its own so the conformance suite
//! can check it alone on each backend. A reply is acknowledged only once
//! durable, like every other write.

use super::CreateOutcome;
use super::StoreError;
use crate::domain::{Event, MerchantId, Order, OrderId, OrderStatus, RequestId, TimerOp};
use async_trait::async_trait;
use time::OffsetDateTime;

/// A command's answer as stored: the status and body the HTTP call would have answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReply {
    /// Whose command.
    pub merchant_id: MerchantId,
    /// The gateway's id for it.
    pub request_id: RequestId,
    /// Hex SHA-256 of the command's canonical form: the same request id with another command
    /// is refused, not answered with this reply.
    pub command_hash: String,
    /// HTTP status code of the answer.
    pub status: u16,
    /// JSON body of the answer, byte for byte.
    pub body: Vec<u8>,
    /// The order the command created or acted on, when it names one.
    pub order_id: Option<OrderId>,
    /// When it was stored (replies are purged with the outbox's retention).
    pub created_at: OffsetDateTime,
}

/// Everything paycore stores about Kafka commands.
#[async_trait]
pub trait CommandStore: Send + Sync + 'static {
    /// The reply stored for `(merchant, request_id)`, if any.
    async fn command_reply(
        &self,
        merchant: &MerchantId,
        request_id: &RequestId,
    ) -> Result<Option<CommandReply>, StoreError>;

    /// Stores `reply` unless a reply is stored under its key already, and answers the one
    /// stored (this one, or the earlier one: the first stored wins, so every copy of a command
    /// is answered alike).
    async fn store_command_reply(&self, reply: CommandReply) -> Result<CommandReply, StoreError>;

    /// Stores `order` with its events and timers and the command's `reply` (its 201 answer),
    /// atomically: a create by Kafka command is admitted by its (merchant, request id) key
    /// instead of a submit token, and its effect and its stored answer are one write. For any
    /// outcome but `Created` nothing is stored (`Answered` when the key has a reply already).
    async fn create_order_for_command(
        &self,
        reply: CommandReply,
        order: Order,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
    ) -> Result<CreateOutcome, StoreError>;

    /// `update_order` for a Kafka command's pay, close or refund: the change and the command's
    /// `reply` (the answer rendered from the changed order) are one write, so a crash cannot
    /// keep the effect and lose its answer. On `VersionConflict` (or any error) neither is
    /// stored. A reply stored under the key already wins (first stored wins, as in
    /// `CommandStore::store_command_reply`); the change is still stored.
    async fn update_order_for_command(
        &self,
        reply: CommandReply,
        order: Order,
        expected_version: u64,
        previous_status: OrderStatus,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
    ) -> Result<(), StoreError>;
}
