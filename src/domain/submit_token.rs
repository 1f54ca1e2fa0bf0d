//! Signed submit tokens. A token names its own expiry and carries an HMAC over it and its
//! merchant, made with a key the store keeps (the same on every node, and across restarts).
//! Issuing one therefore writes nothing; the create that consumes it records it as used in the
//! same write as the order, so it is still good for exactly one order. Pure: no I/O.
//!
//! The form is `tok_` + 26 characters of a time-ordered id + 8 of the expiry (unix seconds) +
//! 26 of the MAC (128 bits), all Crockford base32. A token of the older, stored form (`tok_` +
//! 26 characters, issued by a paycore before this one and kept in the store) parses too; the
//! store alone can judge it.

use super::ids::{CROCKFORD, CROCKFORD_VALUE, MerchantId, SubmitToken};
use hmac::{KeyInit, Mac};
use time::OffsetDateTime;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Characters of the id part.
const ID_LEN: usize = 26;
/// Characters of the expiry (40 bits of unix seconds).
const EXPIRY_LEN: usize = 8;
/// Characters of the MAC (128 bits; the top two of 130 are zero).
const MAC_LEN: usize = 26;
/// Characters after `tok_` of a signed token.
const SIGNED_LEN: usize = ID_LEN + EXPIRY_LEN + MAC_LEN;
/// Bytes of a key.
pub const KEY_LEN: usize = 32;

/// The key submit tokens are signed with, and the HMAC keyed with it (set up once: keying
/// costs two SHA-256 blocks, and every issue and check starts from a copy).
#[derive(Clone)]
pub struct TokenKey {
    bytes: [u8; KEY_LEN],
    keyed: HmacSha256,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// What a token's signature says, checked for one merchant at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// Signed by us for this merchant and not expired: good until `expires_at` unless used.
    Signed {
        /// When it stops being good.
        expires_at: OffsetDateTime,
    },
    /// The older, stored form: the store knows whether it is good.
    Stored,
    /// Forged, altered, another merchant's, or expired.
    Invalid,
}

impl TokenKey {
    /// A key from its bytes (as the store keeps it); `None` unless exactly `KEY_LEN` bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; KEY_LEN]>::try_from(bytes).ok().map(Self::of)
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self::of(rand::random())
    }

    fn of(bytes: [u8; KEY_LEN]) -> Self {
        let mut keyed =
            <HmacSha256 as KeyInit>::new_from_slice(&bytes).expect("HMAC takes keys of any length");
        keyed.update(b"paycore submit token v1\n");
        Self { bytes, keyed }
    }

    /// The key's bytes (for the store).
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// A fresh token for `merchant`, good until `expires_at` (whole seconds; a time outside
    /// 1970..=36812 is clamped, which no configured life reaches).
    pub fn issue(&self, merchant: &MerchantId, expires_at: OffsetDateTime) -> SubmitToken {
        let id = SubmitToken::generate_id();
        let secs = expires_at.unix_timestamp().clamp(0, (1 << 40) - 1) as u64;
        let mut body = String::with_capacity(4 + SIGNED_LEN);
        body.push_str("tok_");
        body.push_str(&id);
        push_base32(&mut body, u128::from(secs), EXPIRY_LEN);
        let mac = self.mac(merchant, &body[4..]);
        push_base32(&mut body, mac, MAC_LEN);
        SubmitToken::from_checked(body)
    }

    /// Whether `token` admits an order of `merchant` at `now`.
    pub fn check(
        &self,
        token: &SubmitToken,
        merchant: &MerchantId,
        now: OffsetDateTime,
    ) -> TokenCheck {
        let Some(rest) = token.as_str().strip_prefix("tok_") else {
            return TokenCheck::Invalid;
        };
        if rest.len() == ID_LEN {
            return TokenCheck::Stored;
        }
        let Some((expires_at, signed, mac)) = split_signed(rest) else {
            return TokenCheck::Invalid;
        };
        let check = self.keyed(merchant, signed);
        // Constant time: the MAC's 16 bytes, big-endian, as the token carries them.
        if check.verify_truncated_left(&mac.to_be_bytes()).is_err() {
            return TokenCheck::Invalid;
        }
        if expires_at <= now {
            return TokenCheck::Invalid;
        }
        TokenCheck::Signed { expires_at }
    }

    fn keyed(&self, merchant: &MerchantId, signed: &str) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(merchant.as_str().as_bytes());
        mac.update(b"\n");
        mac.update(signed.as_bytes());
        mac
    }

    fn mac(&self, merchant: &MerchantId, signed: &str) -> u128 {
        let digest = self.keyed(merchant, signed).finalize().into_bytes();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        u128::from_be_bytes(first)
    }
}

/// The expiry a signed token names (not checked: the store records consumed tokens with it,
/// after the edge verified the signature); `None` for the stored form.
pub fn signed_expiry(token: &SubmitToken) -> Option<OffsetDateTime> {
    let rest = token.as_str().strip_prefix("tok_")?;
    split_signed(rest).map(|(expires_at, _, _)| expires_at)
}

/// (expiry, the signed part, the MAC) of a signed token's characters after `tok_`.
fn split_signed(rest: &str) -> Option<(OffsetDateTime, &str, u128)> {
    if rest.len() != SIGNED_LEN || !rest.is_ascii() {
        return None;
    }
    let (signed, mac) = rest.split_at(ID_LEN + EXPIRY_LEN);
    read_base32(&signed[..ID_LEN])?;
    let secs = read_base32(&signed[ID_LEN..])?;
    let mac = read_base32(mac)?;
    let expires_at = OffsetDateTime::from_unix_timestamp(secs as i64).ok()?;
    Some((expires_at, signed, mac))
}

fn push_base32(out: &mut String, value: u128, chars: usize) {
    for i in (0..chars).rev() {
        out.push(CROCKFORD[((value >> (5 * i)) & 0x1f) as usize] as char);
    }
}

/// The value of at most 26 characters of Crockford base32 (upper case, as we write it). Of 26
/// characters the first holds bits 125..130, so it must be below 8 for the value to fit 128
/// bits (ours always are: an id's top two bits and the MAC's are zero).
fn read_base32(text: &str) -> Option<u128> {
    let mut value: u128 = 0;
    for (i, b) in text.bytes().enumerate() {
        let digit = match CROCKFORD_VALUE[b as usize] {
            0xff => return None,
            d => u128::from(d),
        };
        if i == 0 && text.len() == 26 && digit >= 8 {
            return None;
        }
        value = (value << 5) | digit;
    }
    Some(value)
}

/// Whether `rest` (after `tok_`) is a signed token's text.
pub(super) fn is_signed_shape(rest: &str) -> bool {
    split_signed(rest).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn merchant(s: &str) -> MerchantId {
        MerchantId::parse(s).unwrap()
    }

    #[test]
    fn an_issued_token_is_good_for_its_merchant_until_it_expires() {
        let key = TokenKey::generate();
        let now = OffsetDateTime::now_utc();
        let expires = now + Duration::seconds(1800);
        let t = key.issue(&merchant("m1"), expires);
        assert_eq!(t.as_str().len(), 4 + SIGNED_LEN, "{t}");
        assert_eq!(SubmitToken::parse(t.as_str()).unwrap(), t, "it parses back");
        let expires_s = OffsetDateTime::from_unix_timestamp(expires.unix_timestamp()).unwrap();
        assert_eq!(
            key.check(&t, &merchant("m1"), now),
            TokenCheck::Signed {
                expires_at: expires_s
            }
        );
        assert_eq!(signed_expiry(&t), Some(expires_s));
        assert_eq!(
            key.check(&t, &merchant("m2"), now),
            TokenCheck::Invalid,
            "another merchant's"
        );
        assert_eq!(
            key.check(&t, &merchant("m1"), expires_s),
            TokenCheck::Invalid,
            "expired at its expiry"
        );
        assert_eq!(
            TokenKey::generate().check(&t, &merchant("m1"), now),
            TokenCheck::Invalid,
            "another key's"
        );
        assert_ne!(key.issue(&merchant("m1"), expires), t, "each token is new");
    }

    #[test]
    fn any_altered_character_makes_a_token_invalid() {
        let key = TokenKey::generate();
        let now = OffsetDateTime::now_utc();
        let t = key.issue(&merchant("m1"), now + Duration::seconds(60));
        let text = t.as_str().as_bytes().to_vec();
        for i in 4..text.len() {
            for c in [b'0', b'Z'] {
                if text[i] == c {
                    continue;
                }
                let mut altered = text.clone();
                altered[i] = c;
                let altered = String::from_utf8(altered).unwrap();
                if let Ok(a) = SubmitToken::parse(&altered) {
                    assert_eq!(
                        key.check(&a, &merchant("m1"), now),
                        TokenCheck::Invalid,
                        "{altered}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_later_expiry_cannot_be_written_into_a_token() {
        let key = TokenKey::generate();
        let now = OffsetDateTime::now_utc();
        let t = key.issue(&merchant("m1"), now + Duration::seconds(60));
        let s = t.as_str();
        let mut later = String::from(&s[..4 + ID_LEN]);
        push_base32(
            &mut later,
            (now.unix_timestamp() + 86_400 * 365) as u128,
            EXPIRY_LEN,
        );
        later.push_str(&s[4 + ID_LEN + EXPIRY_LEN..]);
        let later = SubmitToken::parse(&later).unwrap();
        assert_eq!(key.check(&later, &merchant("m1"), now), TokenCheck::Invalid);
    }

    #[test]
    fn the_stored_form_is_left_to_the_store_and_other_text_is_refused() {
        let key = TokenKey::generate();
        let now = OffsetDateTime::now_utc();
        let stored = SubmitToken::generate();
        assert_eq!(key.check(&stored, &merchant("m1"), now), TokenCheck::Stored);
        assert_eq!(signed_expiry(&stored), None);
        let t = key.issue(&merchant("m1"), now + Duration::seconds(60));
        for bad in [
            "",
            "tok_",
            &t.as_str()[..t.as_str().len() - 1],
            &format!("{}0", t.as_str()),
            &t.as_str().replace("tok_", "ord_"),
            &format!("tok_{}", "Z".repeat(SIGNED_LEN)),
            &format!("{}u", &t.as_str()[..t.as_str().len() - 1]),
        ] {
            assert!(SubmitToken::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_key_round_trips_through_its_bytes() {
        let key = TokenKey::generate();
        let again = TokenKey::from_bytes(key.bytes()).unwrap();
        let now = OffsetDateTime::now_utc();
        let t = key.issue(&merchant("m1"), now + Duration::seconds(60));
        assert!(matches!(
            again.check(&t, &merchant("m1"), now),
            TokenCheck::Signed { .. }
        ));
        assert!(TokenKey::from_bytes(&[0u8; 31]).is_none());
        assert!(TokenKey::from_bytes(&[0u8; 33]).is_none());
    }
}
