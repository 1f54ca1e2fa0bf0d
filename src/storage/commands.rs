//! Stored replies of Kafka commands, keyed by (merchant, request id): what makes a redelivered
//! command answer the same without a second effect. Kept apart from `OrderStore` because only
//! the command consumer uses it; a backend implements both. A reply is acknowledged only once
//! durable, like every other write.

use super::StoreError;
use crate::domain::{MerchantId, OrderId, RequestId};
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
}
