//! The request signature of API.md "Merchant authentication": the canonical string over method,
//! path and query, timestamp, nonce and body, and hex(HMAC-SHA256) of it with the merchant's
//! secret. Pure: merchants' requests to us are verified with it (`http::auth`) and our
//! notifications to merchants are signed with it (`actors::notifier`), so both sides of the
//! contract are one piece of code.

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Header naming the merchant.
pub const MERCHANT_HEADER: &str = "X-Paycore-Merchant";
/// Header with unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Paycore-Timestamp";
/// Header with the nonce.
pub const NONCE_HEADER: &str = "X-Paycore-Nonce";
/// Header with the hex signature.
pub const SIGNATURE_HEADER: &str = "X-Paycore-Signature";

/// The canonical string a merchant signs (and that notifications are signed over).
pub fn canonical(
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(
        method.len() + path_and_query.len() + timestamp.len() + nonce.len() + body.len() + 4,
    );
    for part in [
        method.as_bytes(),
        path_and_query.as_bytes(),
        timestamp.as_bytes(),
        nonce.as_bytes(),
    ] {
        m.extend_from_slice(part);
        m.push(b'\n');
    }
    m.extend_from_slice(body);
    m
}

/// hex(HMAC-SHA256(secret, message)).
pub fn sign(secret: &[u8], message: &[u8]) -> String {
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `signature` (hex) is the signature of `message` with `secret`, compared in constant
/// time.
pub fn verify(secret: &[u8], message: &[u8], signature: &str) -> bool {
    let Ok(given) = hex::decode(signature) else {
        return false;
    };
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(secret) else {
        return false;
    };
    mac.update(message);
    mac.verify_slice(&given).is_ok()
}

/// Whether two secrets are equal, in a time that tells nothing of where they differ or how
/// long the right one is: both are hashed, and the digests compared without an early exit.
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    use sha2::Digest;
    let (a, b) = (sha2::Sha256::digest(given), sha2::Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(constant_time_eq(
            b"a-long-admin-token",
            b"a-long-admin-token"
        ));
        assert!(!constant_time_eq(
            b"a-long-admin-token",
            b"a-long-admin-tokeN"
        ));
        assert!(!constant_time_eq(b"", b"a-long-admin-token"));
        assert!(!constant_time_eq(
            b"a-long-admin-token-and-more",
            b"a-long-admin-token"
        ));
    }

    #[test]
    fn canonical_form_matches_the_contract() {
        let m = canonical("POST", "/v1/orders?x=1", "1700000000", "abcdefgh", b"{}");
        assert_eq!(
            m,
            b"POST\n/v1/orders?x=1\n1700000000\nabcdefgh\n{}".to_vec()
        );
    }

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let sig = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &sig));
        assert!(!verify(b"Jefe", b"what do ya want for nothing!", &sig));
        assert!(!verify(b"Jefe", b"x", "not hex"));
    }
}
