//! HMAC-SHA256 as webhooks use it, for both directions: verifying what a sender signed
//! (`gate`) and signing what fanout delivers (`sink::http`). Standard Webhooks signs
//! `<webhook-id>.<webhook-timestamp>.<body>` and writes `v1,<base64>`; GitHub and generic
//! schemes sign the body alone and write hex or base64. Every comparison is in constant time.

use base64::Engine;
use ring::hmac;
use std::time::{SystemTime, UNIX_EPOCH};

use fanout_model::contract;

/// Base64 as senders write it: the standard alphabet, padded or not.
pub const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// A key for HMAC-SHA256.
pub fn key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

/// The key of a Standard Webhooks secret (`whsec_<base64>`, the prefix optional), or why not.
pub fn whsec(secret: &str) -> Result<hmac::Key, &'static str> {
    contract::whsec_key(secret)
        .map(|bytes| key(&bytes))
        .ok_or("is not a Standard Webhooks secret: base64, after `whsec_` as its senders write it")
}

/// The Standard Webhooks signature of `body` sent as message `id` at `timestamp`.
pub fn standard(key: &hmac::Key, id: &[u8], timestamp: &[u8], body: &[u8]) -> hmac::Tag {
    let mut context = hmac::Context::with_key(key);
    context.update(id);
    context.update(b".");
    context.update(timestamp);
    context.update(b".");
    context.update(body);
    context.sign()
}

/// Whether any `v1,<base64>` of a `webhook-signature` header (space-separated) is a Standard
/// Webhooks signature of `body` by any of `keys`. Every pair is tried, so the time taken does
/// not tell which key or which signature matched.
pub fn verify_standard(
    keys: &[hmac::Key],
    id: &[u8],
    timestamp: &[u8],
    body: &[u8],
    header: &[u8],
) -> bool {
    let expected: Vec<hmac::Tag> = keys
        .iter()
        .map(|key| standard(key, id, timestamp, body))
        .collect();
    let mut matched = false;
    for signature in header.split(|&b| b == b' ') {
        let Some(encoded) = signature.strip_prefix(b"v1,") else {
            continue;
        };
        // An HMAC-SHA256 is 32 bytes: a longer signature is no match (and no allocation).
        let mut decoded = [0u8; 64];
        let Ok(length) = BASE64.decode_slice(encoded, &mut decoded) else {
            continue;
        };
        for tag in &expected {
            matched |= same(tag.as_ref(), &decoded[..length]);
        }
    }
    matched
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths only.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// The `webhook-signature` header for `body`: `v1,<base64>` per key, space-separated.
pub fn standard_header(keys: &[hmac::Key], id: &[u8], timestamp: &[u8], body: &[u8]) -> String {
    let mut header = String::with_capacity(keys.len() * 48);
    for key in keys {
        if !header.is_empty() {
            header.push(' ');
        }
        header.push_str("v1,");
        let tag = standard(key, id, timestamp, body);
        base64::engine::general_purpose::STANDARD.encode_string(tag.as_ref(), &mut header);
    }
    header
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 15)] as char);
    }
    text
}

/// `text` as hex (either case), if it is.
pub fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    text.chunks(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks specification's libraries.
    #[test]
    fn signs_and_verifies_the_standard_webhooks_test_vector() {
        let key = whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let (id, timestamp) = (b"msg_p5jXN8AQM9LWM0D4loKWxJek", b"1614265330");
        let body = br#"{"test": 2432232314}"#;
        let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(standard_header(&[key], id, timestamp, body), expected);
        let key = whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let other = whsec("whsec_aGk=").unwrap();
        let header = format!("v1,bm90IGl0 {expected}");
        assert!(verify_standard(
            &[other, key],
            id,
            timestamp,
            body,
            header.as_bytes()
        ));
        let key = whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert!(!verify_standard(
            &[key],
            id,
            b"1614265331",
            body,
            expected.as_bytes()
        ));
    }

    #[test]
    fn hex_of_either_case() {
        assert_eq!(unhex(b"0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(unhex(b"0g"), None);
        assert_eq!(unhex(b"abc"), None);
        assert_eq!(hex(&[0x0a, 0xff]), "0aff");
    }
}
