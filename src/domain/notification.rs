//! Merchant notifications, the pure part: which events become notifications (the merchant's
//! subscription and the URL), the exact body delivered, and what an attempt's result does to a
//! notification (delivered, retried on the schedule, or dead). The notifier does the I/O.

use super::event::Event;
use super::ids::{EventId, MerchantId, NotificationId, OrderId};
use std::collections::HashSet;
use std::time::Duration;
use time::OffsetDateTime;

/// The event types a merchant is notified of when its settings name none.
pub const DEFAULT_NOTIFY_EVENTS: &[&str] = &[
    "order.paid",
    "order.closed",
    "refund.succeeded",
    "refund.failed",
    "order.fulfilled",
    "order.fulfillment_failed",
];

/// Longest `last_error` kept on a notification.
pub const MAX_ERROR_LEN: usize = 256;

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationStatus {
    /// Waiting for its next attempt (or being attempted).
    Pending,
    /// A 2xx answer ended it.
    Delivered,
    /// Every attempt of the schedule failed: a dead letter, until redelivered.
    Dead,
}

impl NotificationStatus {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Delivered => "DELIVERED",
            Self::Dead => "DEAD",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(Self::Pending),
            "DELIVERED" => Some(Self::Delivered),
            "DEAD" => Some(Self::Dead),
            _ => None,
        }
    }
}

/// One notification: an event, to one URL, with its delivery state.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Derived from the event id.
    pub notification_id: NotificationId,
    /// The order.
    pub order_id: OrderId,
    /// The merchant (whose secret signs it).
    pub merchant_id: MerchantId,
    /// The event.
    pub event_id: EventId,
    /// The event's type.
    pub event_type: String,
    /// The order's version after the event: one order's notifications go out in this order.
    pub version: u64,
    /// Where it goes.
    pub url: String,
    /// The exact bytes delivered: the event envelope as JSON.
    pub body: Vec<u8>,
    /// Where it stands.
    pub status: NotificationStatus,
    /// Attempts made, in total (a redelivery adds to them).
    pub attempts: u32,
    /// Position in the retry schedule: the next failure waits `schedule[schedule_pos]`.
    pub schedule_pos: u32,
    /// The HTTP status of the last attempt; `None` when it got no answer.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it is due (while being attempted: when its lease runs out).
    pub next_attempt_at: OffsetDateTime,
    /// When it was made.
    pub created_at: OffsetDateTime,
}

/// What a merchant is notified of, and where by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Event types.
    pub events: HashSet<String>,
    /// The URL used when an order has none.
    pub default_url: Option<String>,
}

impl Notification {
    /// The notification an event becomes under the merchant's subscription, due `now`; `None`
    /// when the merchant is not subscribed to its type or there is no URL (the order's
    /// `notify_url`, else the merchant's default). The order's URL is read from the event's
    /// `data`, the contract's view of the order at that version.
    pub fn for_event(
        event: &Event,
        subscription: &Subscription,
        now: OffsetDateTime,
    ) -> Option<Self> {
        if !subscription.events.contains(&event.event_type) {
            return None;
        }
        /// The one field of the order's view a notification needs.
        #[derive(serde::Deserialize)]
        struct Target {
            notify_url: Option<String>,
        }
        let own = event.data.parse::<Target>().ok().and_then(|t| t.notify_url);
        let url = own.as_deref().or(subscription.default_url.as_deref())?;
        Some(Self {
            notification_id: NotificationId::for_event(&event.event_id),
            order_id: OrderId::parse(&event.order_id).ok()?,
            merchant_id: MerchantId::parse(&event.merchant_id).ok()?,
            event_id: event.event_id.clone(),
            event_type: event.event_type.clone(),
            version: event.version,
            url: url.to_string(),
            body: serde_json::to_vec(event).ok()?,
            status: NotificationStatus::Pending,
            attempts: 0,
            schedule_pos: 0,
            last_status: None,
            last_error: None,
            next_attempt_at: now,
            created_at: now,
        })
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The merchant answered with this HTTP status.
    Answered(u16),
    /// No answer: refused connection, timeout, a refused address, an unreadable URL.
    NoAnswer(String),
}

/// What storage records after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    /// A 2xx: done.
    Delivered {
        /// The status.
        status: u16,
    },
    /// Failed; tried again at `next_attempt_at`.
    Retry {
        /// The status, if any answer came.
        status: Option<u16>,
        /// Why.
        error: String,
        /// When to try again.
        next_attempt_at: OffsetDateTime,
        /// The schedule position after this failure.
        schedule_pos: u32,
    },
    /// Failed, and the schedule is used up: a dead letter.
    Dead {
        /// The status, if any answer came.
        status: Option<u16>,
        /// Why.
        error: String,
    },
}

impl DeliveryOutcome {
    /// The metric label: `delivered`, `failed` (to be retried) or `dead`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delivered { .. } => "delivered",
            Self::Retry { .. } => "failed",
            Self::Dead { .. } => "dead",
        }
    }
}

/// Decides what an attempt made at schedule position `schedule_pos` leads to: a 2xx is
/// delivered; anything else (another status, a 3xx included, since redirects are never
/// followed; or no answer) waits `schedule[schedule_pos]` for the next try, or is dead once the
/// schedule is used up.
pub fn after_attempt(
    result: AttemptResult,
    schedule_pos: u32,
    schedule: &[Duration],
    now: OffsetDateTime,
) -> DeliveryOutcome {
    let (status, error) = match result {
        AttemptResult::Answered(s) if (200..300).contains(&s) => {
            return DeliveryOutcome::Delivered { status: s };
        }
        AttemptResult::Answered(s) => (Some(s), format!("HTTP {s}")),
        AttemptResult::NoAnswer(e) => (None, truncate(e)),
    };
    match schedule.get(schedule_pos as usize) {
        Some(delay) => DeliveryOutcome::Retry {
            status,
            error,
            next_attempt_at: now + *delay,
            schedule_pos: schedule_pos + 1,
        },
        None => DeliveryOutcome::Dead { status, error },
    }
}

fn truncate(mut e: String) -> String {
    if e.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !e.is_char_boundary(end) {
            end -= 1;
        }
        e.truncate(end);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn event(kind: &str, notify_url: Option<&str>) -> Event {
        Event {
            event_id: EventId::generate(),
            event_type: kind.into(),
            order_id: OrderId::generate().to_string(),
            merchant_id: "demo".into(),
            version: 3,
            occurred_at: datetime!(2026-01-02 03:04:05 UTC),
            data: serde_json::json!({"status": "PAID", "notify_url": notify_url}).into(),
        }
    }

    fn subscription(default_url: Option<&str>) -> Subscription {
        Subscription {
            events: DEFAULT_NOTIFY_EVENTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            default_url: default_url.map(str::to_string),
        }
    }

    #[test]
    fn an_event_becomes_a_notification_when_subscribed_and_addressed() {
        let now = datetime!(2026-01-02 03:04:06 UTC);
        let e = event("order.paid", Some("https://m.example/n"));
        let n = Notification::for_event(&e, &subscription(None), now).unwrap();
        assert_eq!(n.notification_id, NotificationId::for_event(&e.event_id));
        assert_eq!(n.url, "https://m.example/n");
        assert_eq!(
            (n.status, n.attempts, n.version),
            (NotificationStatus::Pending, 0, 3)
        );
        assert_eq!(n.next_attempt_at, now);
        let body: serde_json::Value = serde_json::from_slice(&n.body).unwrap();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "data",
                "event_id",
                "merchant_id",
                "occurred_at",
                "order_id",
                "type",
                "version"
            ]
        );
        assert_eq!(body["type"], "order.paid");

        // The merchant's default when the order has none; nothing without either.
        let e = event("order.paid", None);
        let n = Notification::for_event(&e, &subscription(Some("https://d.example/")), now);
        assert_eq!(n.unwrap().url, "https://d.example/");
        assert!(Notification::for_event(&e, &subscription(None), now).is_none());
        // Not subscribed.
        let e = event("order.paying", Some("https://m.example/n"));
        assert!(Notification::for_event(&e, &subscription(None), now).is_none());
    }

    #[test]
    fn attempts_follow_the_schedule_then_die() {
        let now = datetime!(2026-01-02 03:04:05 UTC);
        let schedule = [Duration::from_secs(15), Duration::from_secs(30)];
        let ok = after_attempt(AttemptResult::Answered(204), 2, &schedule, now);
        assert_eq!(ok, DeliveryOutcome::Delivered { status: 204 });
        let first = after_attempt(AttemptResult::Answered(500), 0, &schedule, now);
        assert_eq!(
            first,
            DeliveryOutcome::Retry {
                status: Some(500),
                error: "HTTP 500".into(),
                next_attempt_at: now + Duration::from_secs(15),
                schedule_pos: 1,
            }
        );
        let moved = after_attempt(AttemptResult::Answered(302), 1, &schedule, now);
        assert!(matches!(
            moved,
            DeliveryOutcome::Retry {
                status: Some(302),
                schedule_pos: 2,
                ..
            }
        ));
        let last = after_attempt(AttemptResult::NoAnswer("refused".into()), 2, &schedule, now);
        assert_eq!(
            last,
            DeliveryOutcome::Dead {
                status: None,
                error: "refused".into()
            }
        );
        assert_eq!(last.label(), "dead");
        let long = after_attempt(AttemptResult::NoAnswer("é".repeat(300)), 0, &schedule, now);
        let DeliveryOutcome::Retry { error, .. } = long else {
            panic!("{long:?}")
        };
        assert!(error.len() <= MAX_ERROR_LEN);
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            NotificationStatus::Pending,
            NotificationStatus::Delivered,
            NotificationStatus::Dead,
        ] {
            assert_eq!(NotificationStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(NotificationStatus::parse("pending"), None);
    }
}
