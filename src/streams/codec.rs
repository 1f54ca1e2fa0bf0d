//! The event codec: how an [`Event`] becomes bytes in the outbox, on a Kafka topic and in an
//! in-process consumer's hands, and back. Pure: no I/O, no clock, no randomness.
//!
//! **Schema version 1** is the contract's envelope (API.md "Events and merchant
//! notifications") as one JSON object: `event_id`, `type`, `order_id`, `merchant_id`,
//! `version`, `occurred_at` (RFC 3339, UTC), `data` (the order as `GET /v1/orders/{id}` shows
//! it), in that order, with no white space and the keys inside `data` sorted, so one event
//! always encodes to the same bytes. The version travels beside the bytes, never inside them:
//! as the `paycore-schema` header on Kafka, and implied by the row for the outbox (every row
//! written so far is version 1; a version 2 adds a column defaulting to 1).
//!
//! Decoding takes the version and refuses one it does not know, or bytes that are not that
//! version's shape, with an error naming what is wrong. Fields it does not know are ignored,
//! so a consumer of version 1 reads a producer's additive changes. Byte fixtures in
//! `tests/fixtures/events/` pin the format: a change that alters a fixture's bytes is a new
//! schema version, not an edit.

use crate::domain::Event;

/// The schema version this build writes.
pub const SCHEMA_VERSION: u16 = 1;

/// Schema versions this build reads.
pub const READABLE_VERSIONS: &[u16] = &[1];

/// Content type of an encoded event.
pub const CONTENT_TYPE: &str = "application/json";

/// Bytes that are not an event of the given version.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    /// A version this build cannot read.
    #[error("event schema version {0} is not readable by this build (reads {READABLE_VERSIONS:?})")]
    UnknownVersion(u16),
    /// The bytes are not the version's shape.
    #[error("not a version {version} event: {reason}")]
    Malformed {
        /// The version tried.
        version: u16,
        /// What is wrong, with the path to the field.
        reason: String,
    },
}

/// Encodes `event` at [`SCHEMA_VERSION`].
pub fn encode(event: &Event) -> Vec<u8> {
    // The envelope is a struct (fields in declaration order) and `data` a `serde_json::Value`,
    // whose maps are ordered by key: serialising cannot fail and is deterministic.
    serde_json::to_vec(event).expect("an event always serialises")
}

/// Encodes `event` at [`SCHEMA_VERSION`] as text (the outbox column).
pub fn encode_text(event: &Event) -> String {
    String::from_utf8(encode(event)).expect("JSON is UTF-8")
}

/// Decodes bytes written at `version`.
pub fn decode(version: u16, bytes: &[u8]) -> Result<Event, CodecError> {
    if !READABLE_VERSIONS.contains(&version) {
        return Err(CodecError::UnknownVersion(version));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let event: Event =
        serde_path_to_error::deserialize(&mut de).map_err(|e| CodecError::Malformed {
            version,
            reason: e.to_string(),
        })?;
    de.end().map_err(|e| CodecError::Malformed {
        version,
        reason: e.to_string(),
    })?;
    if !crate::domain::event::EVENT_TYPES.contains(&event.event_type.as_str()) {
        return Err(CodecError::Malformed {
            version,
            reason: format!("unknown event type {:?}", event.event_type),
        });
    }
    Ok(event)
}

/// Reads a `paycore-schema` header value.
pub fn parse_version(header: &[u8]) -> Result<u16, CodecError> {
    std::str::from_utf8(header)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| CodecError::Malformed {
            version: 0,
            reason: format!(
                "schema header {:?} is not a number",
                String::from_utf8_lossy(header)
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventId;
    use std::path::PathBuf;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events")
    }

    /// The events the fixtures hold, built from values, not from the fixture bytes.
    fn fixture_events() -> Vec<(&'static str, Event)> {
        let at = time::macros::datetime!(2026-11-30 08:15:42.123 UTC);
        let data = serde_json::json!({
            "order_id": "ord_01JDX2M4Q8R5T7V9W1Y3Z5B7C9",
            "merchant_id": "m_demo",
            "merchant_order_no": "GAS-2026-0001",
            "status": "PAID",
            "amount": 12_345,
            "currency": "CNY",
            "subject": "Gas top-up",
            "version": 4,
            "paid_amount": 12_345,
            "refunded_amount": 0,
            "channel": "wechat",
            "created_at": "2026-11-30T08:15:01Z",
            "expire_at": "2026-11-30T08:30:01Z",
            "payments": [{"pay_serial_no": "pay_01JDX2M4Q8R5T7V9W1Y3Z5B7D0", "amount": 12_345}],
            "refunds": [],
        });
        let event = |id: &str, ty: &str, version: u64, data: serde_json::Value| Event {
            event_id: EventId::parse(id).unwrap(),
            event_type: ty.to_string(),
            order_id: "ord_01JDX2M4Q8R5T7V9W1Y3Z5B7C9".to_string(),
            merchant_id: "m_demo".to_string(),
            version,
            occurred_at: at,
            data: data.into(),
        };
        let mut refunded = data.clone();
        refunded["status"] = "REFUNDED".into();
        refunded["refunded_amount"] = 12_345.into();
        refunded["version"] = 7.into();
        refunded["refunds"] = serde_json::json!([{
            "refund_id": "rfd_01JDX2M4Q8R5T7V9W1Y3Z5B7D1", "amount": 12_345, "status": "SUCCEEDED"
        }]);
        vec![
            (
                "order.paid.v1.json",
                event("evt_01JDX2M4Q8R5T7V9W1Y3Z5B7E2", "order.paid", 4, data),
            ),
            (
                "refund.succeeded.v1.json",
                event(
                    "evt_01JDX2M4Q8R5T7V9W1Y3Z5B7E3",
                    "refund.succeeded",
                    7,
                    refunded,
                ),
            ),
        ]
    }

    #[test]
    fn version_1_encodes_to_the_checked_in_bytes_and_decodes_back() {
        for (file, event) in fixture_events() {
            let want = std::fs::read(fixtures().join(file)).unwrap();
            // The fixture files end with a newline for editors; the encoding has none.
            let want = want.strip_suffix(b"\n").unwrap_or(&want);
            assert_eq!(
                String::from_utf8_lossy(&encode(&event)),
                String::from_utf8_lossy(want),
                "{file}"
            );
            assert_eq!(decode(1, want).unwrap(), event, "{file}");
            assert_eq!(encode_text(&event).as_bytes(), want);
        }
    }

    #[test]
    fn unknown_versions_and_wrong_shapes_are_refused_with_the_reason() {
        let (_, event) = fixture_events().remove(0);
        let bytes = encode(&event);
        assert_eq!(decode(2, &bytes), Err(CodecError::UnknownVersion(2)));
        assert_eq!(decode(0, &bytes), Err(CodecError::UnknownVersion(0)));

        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v.as_object_mut().unwrap().remove("version");
        let e = decode(1, &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("version"), "{e}");

        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["occurred_at"] = "yesterday".into();
        let e = decode(1, &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("occurred_at"), "{e}");

        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["type"] = "order.teleported".into();
        let e = decode(1, &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("order.teleported"), "{e}");

        let mut trailing = bytes.clone();
        trailing.extend_from_slice(b" {}");
        assert!(decode(1, &trailing).is_err(), "trailing bytes");
        assert!(decode(1, b"").is_err());
        assert!(decode(1, &bytes[..bytes.len() / 2]).is_err(), "truncated");
    }

    #[test]
    fn fields_a_newer_producer_adds_are_ignored() {
        let (_, event) = fixture_events().remove(0);
        let mut v: serde_json::Value = serde_json::from_slice(&encode(&event)).unwrap();
        v["partition_hint"] = 3.into();
        assert_eq!(decode(1, &serde_json::to_vec(&v).unwrap()).unwrap(), event);
    }

    #[test]
    fn the_schema_header_parses_or_says_why_not() {
        assert_eq!(parse_version(b"1"), Ok(1));
        assert!(parse_version(b"one").is_err());
        assert!(parse_version(b"70000").is_err());
    }
}
