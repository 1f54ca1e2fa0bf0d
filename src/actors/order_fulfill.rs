//! Fulfillment of a paid order at its merchant's business system, done by the order's actor:
//! the write-off right after PAID, retries on the durable `fulfill` timer (the exception list),
//! and, once the schedule runs out, the automatic refund by the original route. A merchant's
//! refund of a fulfilled order first reverses the write-off; if the business system refuses,
//! nothing is refunded.

use super::order::{OrderActor, OrderError, State};
use crate::billers::{Biller, BillerError};
use crate::domain::{
    ChangeKind, Command, FulfillmentOutcome, Order, OrderId, RefundNo, RefundRequest, TimerKind,
    TimerOp, timer::FULFILLMENT_BACKSTOP,
};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use time::OffsetDateTime;

/// The business system's reversal id for a merchant's refund: derived from the order and the
/// merchant's `refund_no`, so a merchant retrying a refund whose reversal answer was lost
/// reverses once.
fn reversal_id(order_id: &OrderId, refund_no: &RefundNo) -> String {
    let mut h = Sha256::new();
    h.update(order_id.to_string().as_bytes());
    h.update(b"\n");
    h.update(refund_no.to_string().as_bytes());
    format!("rev_{}", &hex::encode(h.finalize())[..32])
}

impl OrderActor {
    fn biller(&self, order: &Order) -> Option<Arc<dyn Biller>> {
        self.deps.biller_for(&order.merchant_id)
    }

    /// The first write-off, right after the message that paid the order was answered.
    pub(super) async fn try_fresh_fulfillment(&self, state: &mut State) {
        if !std::mem::take(&mut state.fresh_fulfillment) {
            return;
        }
        if let Ok(order) = self.load(state).await {
            self.attempt_fulfillment(state, order).await;
        }
    }

    /// The `fulfill` timer fired; `attempt` is how many attempts were made when it was set.
    pub(super) async fn fulfill_on_timer(
        &self,
        state: &mut State,
        order: Order,
        attempt: u32,
    ) -> Option<TimerOp> {
        if !order.fulfillment_open() || order.fulfillment.attempts != attempt {
            // Done, or set before an attempt that has been made since (whose own timer stands).
            return None;
        }
        self.attempt_fulfillment(state, order).await
    }

    /// One write-off attempt, recorded with the timer of the next one in the same write.
    /// Answers what the fired timer should become when the result could not be recorded.
    async fn attempt_fulfillment(&self, state: &mut State, order: Order) -> Option<TimerOp> {
        let Some(biller) = self.biller(&order) else {
            tracing::error!(
                "the order's merchant has no business system configured any more; fulfillment waits"
            );
            return None;
        };
        let result = biller.write_off(&order).await;
        let now = OffsetDateTime::now_utc();
        let attempts = order.fulfillment.attempts.saturating_add(1);
        let (outcome, next, label) = match result {
            Ok(()) => (FulfillmentOutcome::Succeeded, None, "succeeded"),
            Err(e) => {
                let next = self
                    .deps
                    .schedule_for(&order.merchant_id)
                    .next_fulfillment(now, attempts);
                let give_up = next.is_none();
                if give_up {
                    tracing::error!(attempts, error = %e, "fulfillment given up; refunding the order by the original route");
                } else {
                    tracing::warn!(attempts, error = %e, "write-off failed; retrying on the schedule");
                }
                let outcome = FulfillmentOutcome::Failed {
                    error: e.to_string(),
                    give_up,
                };
                (outcome, next, if give_up { "given_up" } else { "failed" })
            }
        };
        let cmd = Command::RecordFulfillment(outcome);
        match self
            .persist(state, order, cmd, next.into_iter().collect())
            .await
        {
            Ok(_) => {
                self.deps
                    .metrics
                    .fulfillments
                    .with_label_values(&[label])
                    .inc();
                None
            }
            Err(e) => {
                // The write-off is idempotent: trying again soon is harmless.
                tracing::warn!(error = %e, "fulfillment result not recorded; trying again");
                Some(TimerOp::Set {
                    kind: TimerKind::Fulfill,
                    due_at: now + FULFILLMENT_BACKSTOP,
                    attempt: attempts - 1,
                })
            }
        }
    }

    /// Before a merchant's refund of a fulfilled order is recorded: the business system
    /// reverses the credit first. A refusal refuses the refund; nothing is refunded.
    pub(super) async fn reverse_before_refund(
        &self,
        order: &Order,
        request: &RefundRequest,
    ) -> Result<(), OrderError> {
        if !order.refund_needs_reversal() {
            return Ok(());
        }
        // Only a refund the state machine would take (not a repeat, not refused) is reversed.
        let changes = order.apply(
            &Command::RequestRefund(request.clone()),
            OffsetDateTime::now_utc(),
        )?;
        if !changes
            .iter()
            .any(|c| matches!(c.kind, ChangeKind::RefundRequested { .. }))
        {
            return Ok(());
        }
        let biller = self.biller(order).ok_or_else(|| {
            OrderError::ReversalRefused("the merchant has no business system configured".into())
        })?;
        let id = reversal_id(&order.order_id, &request.refund_no);
        let result = biller
            .reverse(&order.order_id, &id, request.amount, None)
            .await;
        let label = match &result {
            Ok(()) => "reversed",
            Err(BillerError::Refused { .. }) => "refused",
            Err(BillerError::Unavailable(_)) => "unavailable",
        };
        self.deps
            .metrics
            .reversals
            .with_label_values(&[label])
            .inc();
        match result {
            Ok(()) => Ok(()),
            Err(BillerError::Refused { code, message }) => {
                Err(OrderError::ReversalRefused(format!("{code}: {message}")))
            }
            Err(BillerError::Unavailable(m)) => Err(OrderError::BillerUnavailable(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversal_ids_are_stable_per_refund_no_and_fit_the_protocol() {
        let order = OrderId::generate();
        let a = RefundNo::parse("R-1").unwrap();
        let b = RefundNo::parse("R-2").unwrap();
        assert_eq!(reversal_id(&order, &a), reversal_id(&order, &a));
        assert_ne!(reversal_id(&order, &a), reversal_id(&order, &b));
        assert_ne!(
            reversal_id(&order, &a),
            reversal_id(&OrderId::generate(), &a)
        );
        let id = reversal_id(&order, &a);
        assert!(id.len() <= paycore_biller_sim::protocol::MAX_ID_LEN);
        assert!(id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'));
    }
}
