//! Reading request bodies: a hard size limit (413 `body_too_large`), then JSON decoding that
//! tells malformed JSON (400 `malformed_json`) from well-formed JSON with a bad field (422
//! `invalid_request`, naming the field).

use super::error::ApiError;
use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::web;
use futures::StreamExt;
use serde::de::DeserializeOwned;

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body is larger than {limit} bytes"),
    )
}

/// Reads the whole body, refusing more than `limit` bytes (by Content-Length when given, and
/// while streaming in any case).
pub async fn read(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut buf = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Decodes JSON into `T`.
pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("malformed JSON: {inner}"),
            ),
            serde_json::error::Category::Data => {
                let field = if path == "." {
                    field_from_message(&inner.to_string())
                } else {
                    path
                };
                ApiError::invalid(&field, inner.to_string())
            }
        }
    })
}

/// For "missing field `x`" and "unknown field `x`" serde names the field only in its message.
fn field_from_message(msg: &str) -> String {
    msg.split('`').nth(1).unwrap_or("body").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        amount: i64,
        name: Option<String>,
    }

    #[test]
    fn classifies_errors() {
        assert_eq!(json::<T>(b"{").unwrap_err().code(), "malformed_json");
        assert_eq!(json::<T>(b"not json").unwrap_err().code(), "malformed_json");
        let e = json::<T>(br#"{"amount": "1"}"#).unwrap_err();
        assert_eq!(
            (e.code(), format!("{e:?}").contains("amount")),
            ("invalid_request", true)
        );
        let e = json::<T>(br#"{"name": "x"}"#).unwrap_err();
        assert!(
            format!("{e:?}").contains("field: Some(\"amount\")"),
            "{e:?}"
        );
        let e = json::<T>(br#"{"amount": 1, "extra": 2}"#).unwrap_err();
        assert!(format!("{e:?}").contains("field: Some(\"extra\")"), "{e:?}");
        assert!(json::<T>(br#"{"amount": 1}"#).is_ok());
    }
}
