//! The command codec: bytes of a command message into an owned `Command` (or the refusal to
//! answer, or the reason it goes to the dead-letter topic), the command's hash, and the bytes
//! of a reply. Pure: no I/O, tested from byte fixtures, bad payloads included.

use crate::domain::RequestId;
use crate::http::error::ApiError;
use actix_web::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The envelope fields; everything else in a command is the operation's body.
const ENVELOPE: [&str; 4] = ["request_id", "merchant_id", "command", "order_id"];

/// What a command asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// `POST /v1/orders` without a submit token.
    Create,
    /// `POST /v1/orders/{order_id}/pay`.
    Pay,
    /// `POST /v1/orders/{order_id}/close`.
    Close,
    /// `POST /v1/orders/{order_id}/refunds`.
    Refund,
}

impl CommandKind {
    /// The `command` value, and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Pay => "pay",
            Self::Close => "close",
            Self::Refund => "refund",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "create" => Self::Create,
            "pay" => Self::Pay,
            "close" => Self::Close,
            "refund" => Self::Refund,
            _ => return None,
        })
    }
}

/// A well-formed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The gateway's id for it.
    pub request_id: RequestId,
    /// The merchant it names (checked against the configured ones by the consumer).
    pub merchant_id: String,
    /// What it asks.
    pub kind: CommandKind,
    /// The order, for pay, close and refund.
    pub order_id: Option<String>,
    /// The operation's JSON body: the command without its envelope fields.
    pub body: Vec<u8>,
    /// Hex SHA-256 of the whole command in canonical form (keys sorted, no spaces).
    pub hash: String,
}

/// Why a message went to the dead-letter topic (the `paycore-dlq-reason` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// Not JSON.
    MalformedJson,
    /// JSON, but not an object.
    NotAnObject,
    /// No `request_id`, or not 1..=64 of `[A-Za-z0-9_-]`: nothing to key a reply by.
    NoRequestId,
    /// Larger than the bound, and no readable `request_id`.
    TooLarge,
}

impl DeadReason {
    /// The header value, and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::NotAnObject => "not_an_object",
            Self::NoRequestId => "no_request_id",
            Self::TooLarge => "too_large",
        }
    }
}

/// What a message decodes to.
#[derive(Debug)]
pub enum Decoded {
    /// A command to run.
    Command(Command),
    /// A command that is answered with `error` and has no effect.
    Refused {
        /// Its request id.
        request_id: RequestId,
        /// Its merchant, when it named one.
        merchant_id: Option<String>,
        /// Its `command`, when it named a known one.
        kind: Option<CommandKind>,
        /// The answer.
        error: ApiError,
    },
    /// Cannot be answered: to the dead-letter topic.
    Dead(DeadReason),
}

fn invalid(field: &str, why: &str) -> ApiError {
    ApiError::invalid(field, why)
}

/// Decodes one message value; `max_bytes` bounds the command.
pub fn decode(bytes: &[u8], max_bytes: usize) -> Decoded {
    if bytes.len() > max_bytes {
        // Read only the ids of an oversized command, to answer it.
        #[derive(serde::Deserialize)]
        struct Head {
            request_id: Option<String>,
            merchant_id: Option<String>,
        }
        return match serde_json::from_slice::<Head>(bytes) {
            Ok(Head {
                request_id: Some(r),
                merchant_id,
            }) => match RequestId::parse(&r) {
                Ok(request_id) => Decoded::Refused {
                    request_id,
                    merchant_id,
                    kind: None,
                    error: ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        format!("command is larger than {max_bytes} bytes"),
                    ),
                },
                Err(_) => Decoded::Dead(DeadReason::TooLarge),
            },
            _ => Decoded::Dead(DeadReason::TooLarge),
        };
    }
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(_) => return Decoded::Dead(DeadReason::MalformedJson),
    };
    let hash = hash(&value);
    let Value::Object(mut map) = value else {
        return Decoded::Dead(DeadReason::NotAnObject);
    };
    let Some(request_id) = map
        .get("request_id")
        .and_then(Value::as_str)
        .and_then(|r| RequestId::parse(r).ok())
    else {
        return Decoded::Dead(DeadReason::NoRequestId);
    };
    let merchant_id = map
        .get("merchant_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let command = map.get("command").and_then(Value::as_str);
    let kind = command.and_then(CommandKind::parse);
    let refused = |error: ApiError| Decoded::Refused {
        request_id: request_id.clone(),
        merchant_id: merchant_id.clone(),
        kind,
        error,
    };
    let Some(merchant) = merchant_id.clone() else {
        return refused(invalid("merchant_id", "a command names its merchant_id"));
    };
    let kind = match (command, kind) {
        (_, Some(k)) => k,
        (None, _) => return refused(invalid("command", "missing field `command`")),
        (Some(_), None) => {
            let mut e = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_command",
                "command must be one of create, pay, close, refund",
            );
            e.set_field("command");
            return refused(e);
        }
    };
    let order_id = match kind {
        // A create names no order: an `order_id` is left in its body, where the field check
        // refuses it as an unknown field.
        CommandKind::Create => None,
        _ => match map.get("order_id") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return refused(invalid("order_id", "must be a string")),
            None => return refused(invalid("order_id", "missing field `order_id`")),
        },
    };
    for key in ENVELOPE {
        if key != "order_id" || kind != CommandKind::Create {
            map.remove(key);
        }
    }
    let body = serde_json::to_vec(&Value::Object(map)).unwrap_or_default();
    Decoded::Command(Command {
        request_id,
        merchant_id: merchant,
        kind,
        order_id,
        body,
        hash,
    })
}

/// Hex SHA-256 of the canonical form of a command: object keys sorted at every level, no
/// insignificant whitespace. Two copies of one command hash alike however they were spaced
/// or ordered.
pub fn hash(v: &Value) -> String {
    let mut out = Vec::with_capacity(512);
    canonical(v, &mut out);
    hex::encode(Sha256::digest(&out))
}

fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // A string key always serializes (into a Vec, writing cannot fail).
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                canonical(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// A reply message's value: the answer's status and body, as HTTP would send them.
#[derive(Serialize)]
struct ReplyValue<'a> {
    request_id: &'a str,
    merchant_id: Option<&'a str>,
    command: Option<&'a str>,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_secs: Option<u32>,
    body: &'a serde_json::value::RawValue,
}

/// One reply, ready to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Whose request.
    pub request_id: String,
    /// The merchant named, if any.
    pub merchant_id: Option<String>,
    /// The command, if known.
    pub command: Option<CommandKind>,
    /// HTTP status.
    pub status: u16,
    /// `Retry-After` of the HTTP answer, if any.
    pub retry_after_secs: Option<u32>,
    /// The answer's JSON body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The reply to a refused command.
    pub fn error(
        request_id: &RequestId,
        merchant_id: Option<String>,
        command: Option<CommandKind>,
        e: &ApiError,
    ) -> Self {
        Self {
            request_id: request_id.to_string(),
            merchant_id,
            command,
            status: e.status().as_u16(),
            retry_after_secs: e.retry_after_secs(),
            body: e.body_bytes(),
        }
    }

    /// The reply message's value.
    pub fn encode(&self) -> Vec<u8> {
        use serde_json::value::RawValue;
        // Bodies are the JSON paycore rendered; anything else would show as null.
        let raw = std::str::from_utf8(&self.body)
            .ok()
            .and_then(|s| RawValue::from_string(s.to_string()).ok());
        serde_json::to_vec(&ReplyValue {
            request_id: &self.request_id,
            merchant_id: self.merchant_id.as_deref(),
            command: self.command.map(CommandKind::as_str),
            status: self.status,
            retry_after_secs: self.retry_after_secs,
            body: raw.as_deref().unwrap_or(RawValue::NULL),
        })
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAX: usize = 1024;

    fn refused_code(d: Decoded) -> (String, String) {
        match d {
            Decoded::Refused { error, .. } => {
                let body: Value = serde_json::from_slice(&error.body_bytes()).unwrap();
                (
                    error.code().to_string(),
                    body["error"]["field"].as_str().unwrap_or("").to_string(),
                )
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_pay_command_splits_into_envelope_and_body() {
        let bytes = br#"{"request_id":"r-1","merchant_id":"demo","command":"pay","order_id":"ord_X","pay_method":"native"}"#;
        let Decoded::Command(c) = decode(bytes, MAX) else {
            panic!("not a command")
        };
        assert_eq!(c.request_id.as_str(), "r-1");
        assert_eq!(c.merchant_id, "demo");
        assert_eq!(c.kind, CommandKind::Pay);
        assert_eq!(c.order_id.as_deref(), Some("ord_X"));
        assert_eq!(
            serde_json::from_slice::<Value>(&c.body).unwrap(),
            json!({"pay_method": "native"})
        );
    }

    #[test]
    fn a_create_keeps_a_stray_order_id_in_its_body_for_the_field_check() {
        let bytes = br#"{"request_id":"r-1","merchant_id":"demo","command":"create","order_id":"x","amount":1}"#;
        let Decoded::Command(c) = decode(bytes, MAX) else {
            panic!("not a command")
        };
        assert_eq!(c.order_id, None);
        assert_eq!(
            serde_json::from_slice::<Value>(&c.body).unwrap(),
            json!({"order_id": "x", "amount": 1})
        );
    }

    #[test]
    fn the_hash_ignores_key_order_and_spacing_but_not_content() {
        let a = decode(
            br#"{"request_id":"r","merchant_id":"m","command":"close","order_id":"o"}"#,
            MAX,
        );
        let b = decode(
            b"{ \"order_id\" : \"o\", \"command\":\"close\",\n \"merchant_id\":\"m\",\"request_id\":\"r\"}",
            MAX,
        );
        let c = decode(
            br#"{"request_id":"r","merchant_id":"m","command":"close","order_id":"p"}"#,
            MAX,
        );
        let h = |d: Decoded| match d {
            Decoded::Command(c) => c.hash,
            other => panic!("{other:?}"),
        };
        let (a, b, c) = (h(a), h(b), h(c));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Stored replies keep this hash: it must not change between versions. It is the
        // SHA-256 of the sorted, compact text (computed apart from this code).
        assert_eq!(
            a,
            "e81584c1394f5f7a6b9c960d240b6603446efe7329a212de13456a8cedd9fa0e"
        );
    }

    #[test]
    fn messages_without_a_readable_request_id_are_dead_letters() {
        assert!(matches!(
            decode(b"{not json", MAX),
            Decoded::Dead(DeadReason::MalformedJson)
        ));
        assert!(matches!(
            decode(b"[1,2]", MAX),
            Decoded::Dead(DeadReason::NotAnObject)
        ));
        assert!(matches!(
            decode(br#"{"merchant_id":"demo","command":"pay"}"#, MAX),
            Decoded::Dead(DeadReason::NoRequestId)
        ));
        assert!(matches!(
            decode(br#"{"request_id":"has space","command":"pay"}"#, MAX),
            Decoded::Dead(DeadReason::NoRequestId)
        ));
        assert!(matches!(
            decode(br#"{"request_id":7}"#, MAX),
            Decoded::Dead(DeadReason::NoRequestId)
        ));
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX));
        assert!(matches!(
            decode(big.as_bytes(), MAX),
            Decoded::Dead(DeadReason::TooLarge)
        ));
    }

    #[test]
    fn commands_with_a_request_id_are_refused_with_the_contract_error() {
        let big = format!(
            "{{\"request_id\":\"r-big\",\"merchant_id\":\"demo\",\"pad\":\"{}\"}}",
            "x".repeat(MAX)
        );
        assert_eq!(
            refused_code(decode(big.as_bytes(), MAX)),
            ("body_too_large".into(), "".into())
        );
        assert_eq!(
            refused_code(decode(br#"{"request_id":"r","command":"pay"}"#, MAX)),
            ("invalid_request".into(), "merchant_id".into())
        );
        assert_eq!(
            refused_code(decode(br#"{"request_id":"r","merchant_id":"m"}"#, MAX)),
            ("invalid_request".into(), "command".into())
        );
        assert_eq!(
            refused_code(decode(
                br#"{"request_id":"r","merchant_id":"m","command":"teleport"}"#,
                MAX
            )),
            ("unknown_command".into(), "command".into())
        );
        assert_eq!(
            refused_code(decode(
                br#"{"request_id":"r","merchant_id":"m","command":"refund"}"#,
                MAX
            )),
            ("invalid_request".into(), "order_id".into())
        );
        assert_eq!(
            refused_code(decode(
                br#"{"request_id":"r","merchant_id":"m","command":"close","order_id":5}"#,
                MAX
            )),
            ("invalid_request".into(), "order_id".into())
        );
    }

    #[test]
    fn a_reply_carries_the_status_and_the_body_byte_for_byte() {
        let r = Reply {
            request_id: "r-1".into(),
            merchant_id: Some("demo".into()),
            command: Some(CommandKind::Create),
            status: 201,
            retry_after_secs: None,
            body: br#"{"order_id":"ord_1","amount":100}"#.to_vec(),
        };
        let text = String::from_utf8(r.encode()).unwrap();
        assert_eq!(
            text,
            r#"{"request_id":"r-1","merchant_id":"demo","command":"create","status":201,"body":{"order_id":"ord_1","amount":100}}"#
        );
        let e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down")
            .retry_after(3);
        let r = Reply::error(&RequestId::parse("r-2").unwrap(), None, None, &e);
        let v: Value = serde_json::from_slice(&r.encode()).unwrap();
        assert_eq!(
            v,
            json!({"request_id": "r-2", "merchant_id": null, "command": null, "status": 429,
                   "retry_after_secs": 3,
                   "body": {"error": {"code": "rate_limited", "message": "slow down"}}})
        );
    }
}
