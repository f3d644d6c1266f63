//! Signed deliveries (`sign:` on a target): every attempt carries the Standard Webhooks
//! headers, so the target can tell a delivery from fanout from a forged one and refuse a
//! replay. `webhook-id` is the event's id (the same on every attempt, as the specification
//! wants; a batch's is derived from its events' ids), `webhook-timestamp` the attempt's time,
//! and `webhook-signature` one `v1,<base64>` per configured secret (two during a rotation),
//! over `id.timestamp.body`: for a batch, its whole NDJSON body.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use ring::{digest, hmac};

use fanout_model::contract::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};

use super::super::substitute;
use crate::auth::signature;
use crate::ops::startup::StartupError;
use crate::sink::parcel::{Parcel, EVENT_IDS};
use crate::spec::Signing;

const ID: HeaderName = HeaderName::from_static(WEBHOOK_ID);
const TIMESTAMP: HeaderName = HeaderName::from_static(WEBHOOK_TIMESTAMP);
const SIGNATURE: HeaderName = HeaderName::from_static(WEBHOOK_SIGNATURE);

pub struct Signer {
    keys: Vec<hmac::Key>,
}

impl Signer {
    /// The keys of `sign`'s secrets, read from `env`; errors name `place`, never a value.
    pub fn resolve(
        sign: &Signing,
        place: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Signer, StartupError> {
        let mut keys = Vec::with_capacity(sign.secrets.len());
        for (n, written) in sign.secrets.iter().enumerate() {
            let bad = |why: &str| StartupError(format!("{place}, field \"sign.secrets\": {why}"));
            let secret = substitute(written, env).map_err(|e| bad(&e))?;
            let key =
                signature::whsec(&secret).map_err(|why| bad(&format!("secret {} {why}", n + 1)))?;
            keys.push(key);
        }
        Ok(Signer { keys })
    }

    /// Adds the signature headers of `parcel`, sent now, to `headers`.
    pub fn sign(&self, parcel: &Parcel, headers: &mut HeaderMap) {
        let id = if parcel.ids.0 == EVENT_IDS {
            batch_id(parcel.ids.1.as_bytes())
        } else {
            parcel.ids.1.clone()
        };
        let timestamp = HeaderValue::from(signature::unix_now());
        let value = signature::standard_header(
            &self.keys,
            id.as_bytes(),
            timestamp.as_bytes(),
            &parcel.body,
        );
        let value = HeaderValue::try_from(value).expect("v1, and base64 are a valid header value");
        headers.insert(ID, id);
        headers.insert(TIMESTAMP, timestamp);
        headers.insert(SIGNATURE, value);
    }
}

/// A batch's `webhook-id`: `batch_` and the first 16 bytes of the SHA-256 of its ids, in hex.
/// The same batch sent again (a retry) has the same id; a batch of other events has another.
fn batch_id(ids: &[u8]) -> HeaderValue {
    let hash = digest::digest(&digest::SHA256, ids);
    let text = format!("batch_{}", signature::hex(&hash.as_ref()[..16]));
    HeaderValue::try_from(text).expect("hex is a valid header value")
}
