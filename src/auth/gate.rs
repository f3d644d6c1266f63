//! What a request must pass before its route takes it in: the route's `auth` (a bearer token,
//! or a webhook signature over the raw body) and its `rate_limit`. Secrets are read from the
//! environment once at start-up and kept only as HMAC keys; every comparison is in constant
//! time, and whatever was wrong, the client learns only that it is unauthorized.
//!
//! A bearer token is checked from the head, before the body is read (and before the rate
//! limit, so a flood of bad tokens does not use up the legitimate clients' budget); a
//! signature scheme checks from the head that its headers are there (and, for Standard
//! Webhooks, that the timestamp is within the tolerance), and verifies the signature once the
//! body is read. A Standard Webhooks `webhook-id` is remembered for twice the tolerance and a
//! second, so a replay is answered with the first event's id and not taken in again.

use base64::Engine;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use ring::hmac;
use std::time::Duration;

use fanout_model::contract::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};

use crate::auth::rate_limit::Limiter;
use crate::auth::signature::{self, unix_now};
use crate::fan_out::idempotency::{self, IdempotencyKeys};
use crate::ops::startup::StartupError;
use crate::sink::{substitute, Resolver};
use crate::spec::{Auth, Encoding, RouteSpec};

const ID: HeaderName = HeaderName::from_static(WEBHOOK_ID);
const TIMESTAMP: HeaderName = HeaderName::from_static(WEBHOOK_TIMESTAMP);
const SIGNATURE: HeaderName = HeaderName::from_static(WEBHOOK_SIGNATURE);
const GITHUB_SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature-256");

/// A route's gate, resolved at start-up.
pub struct Gate {
    verifier: Option<Verifier>,
    limiter: Option<Limiter>,
    /// The `webhook-id`s a Standard Webhooks route took in within twice its tolerance.
    pub replays: IdempotencyKeys,
}

enum Verifier {
    /// The tokens' HMACs under a key made at start-up: comparing HMACs compares tokens in
    /// constant time whatever their lengths.
    Bearer {
        key: hmac::Key,
        tokens: Vec<hmac::Tag>,
    },
    StandardWebhooks {
        keys: Vec<hmac::Key>,
        tolerance: u64,
    },
    /// GitHub's scheme and the generic one: an HMAC of the body in one header.
    Body {
        header: HeaderName,
        key: hmac::Key,
        encoding: Encoding,
        prefix: &'static str,
    },
}

/// A request whose credentials are missing or wrong; which, is not said.
#[derive(Debug, PartialEq, Eq)]
pub struct Unauthorized;

impl Gate {
    pub fn new(route: &'static RouteSpec, resolver: &Resolver<'_>) -> Result<Gate, StartupError> {
        let field = |field: &str| format!("route \"{}\", field \"{field}\"", route.name);
        let secret = |field_name: &str, written: &str| {
            let value = substitute(written, resolver.env())
                .map_err(|e| StartupError(format!("{}: {e}", field(field_name))))?;
            if value.is_empty() {
                let message = format!("{}: \"{written}\" is empty", field(field_name));
                return Err(StartupError(message));
            }
            Ok(value)
        };
        let mut window = Duration::ZERO;
        let verifier = match &route.auth {
            None => None,
            Some(Auth::Bearer(tokens)) => {
                let rng = ring::rand::SystemRandom::new();
                let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
                    .map_err(|_| StartupError("no randomness for a key".into()))?;
                let mut tags = Vec::new();
                for written in tokens.iter() {
                    let token = secret("auth.bearer", written)?;
                    if !token.bytes().all(|b| b.is_ascii_graphic()) {
                        let message = format!(
                            "{}: \"{written}\" holds a space or a control character once substituted (a trailing newline?): no client could send it",
                            field("auth.bearer")
                        );
                        return Err(StartupError(message));
                    }
                    tags.push(hmac::sign(&key, token.as_bytes()));
                }
                Some(Verifier::Bearer { key, tokens: tags })
            }
            Some(Auth::StandardWebhooks(scheme)) => {
                let place = "auth.standard_webhooks.secrets";
                let mut keys = Vec::new();
                for (n, written) in scheme.secrets.iter().enumerate() {
                    let value = secret(place, written)?;
                    let key = signature::whsec(&value).map_err(|why| {
                        StartupError(format!("{}: secret {} {why}", field(place), n + 1))
                    })?;
                    keys.push(key);
                }
                // Timestamps are whole seconds, compared inclusively: an id outlives the last
                // second its timestamp is accepted in.
                window = scheme.tolerance * 2 + Duration::from_secs(1);
                Some(Verifier::StandardWebhooks {
                    keys,
                    tolerance: scheme.tolerance.as_secs(),
                })
            }
            Some(Auth::Github(scheme)) => Some(Verifier::Body {
                header: GITHUB_SIGNATURE,
                key: signature::key(secret("auth.github.secret", scheme.secret)?.as_bytes()),
                encoding: Encoding::Hex,
                prefix: "sha256=",
            }),
            Some(Auth::Hmac(scheme)) => Some(Verifier::Body {
                header: HeaderName::from_bytes(scheme.header.as_bytes()).map_err(|_| {
                    StartupError(format!("{}: not a header name", field("auth.hmac.header")))
                })?,
                key: signature::key(secret("auth.hmac.secret", scheme.secret)?.as_bytes()),
                encoding: scheme.encoding,
                prefix: scheme.prefix,
            }),
        };
        Ok(Gate {
            verifier,
            limiter: route.rate_limit.as_ref().map(Limiter::new),
            replays: IdempotencyKeys::with_window(window),
        })
    }

    /// What the head alone tells: a bearer token is right; a signature's headers are there
    /// and a Standard Webhooks timestamp is within the tolerance.
    pub fn check_head(&self, headers: &HeaderMap) -> Result<(), Unauthorized> {
        match &self.verifier {
            None => Ok(()),
            Some(Verifier::Bearer { key, tokens }) => {
                let presented = headers
                    .get(AUTHORIZATION)
                    .and_then(|value| bearer_token(value.as_bytes()))
                    .ok_or(Unauthorized)?;
                let presented = hmac::sign(key, presented);
                let mut matched = false;
                for token in tokens {
                    matched |= signature::same(presented.as_ref(), token.as_ref());
                }
                matched.then_some(()).ok_or(Unauthorized)
            }
            Some(Verifier::StandardWebhooks { tolerance, .. }) => {
                let id = headers.get(ID).ok_or(Unauthorized)?;
                if !idempotency::valid(id.as_bytes()) || !headers.contains_key(SIGNATURE) {
                    return Err(Unauthorized);
                }
                let timestamp = headers.get(TIMESTAMP).ok_or(Unauthorized)?;
                let sent: u64 = std::str::from_utf8(timestamp.as_bytes())
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or(Unauthorized)?;
                (unix_now().abs_diff(sent) <= *tolerance)
                    .then_some(())
                    .ok_or(Unauthorized)
            }
            Some(Verifier::Body { header, .. }) => {
                headers.get(header).map(|_| ()).ok_or(Unauthorized)
            }
        }
    }

    /// Takes a token of the route's rate limit, or says how long until one is there.
    pub fn take(&self) -> Result<(), Duration> {
        self.limiter.as_ref().map_or(Ok(()), Limiter::take)
    }

    /// Whether the gate's credential is the request's `Authorization` (a bearer token): a
    /// secret of fanout's, which a balance route does not pass on to its backends.
    pub fn takes_authorization(&self) -> bool {
        matches!(self.verifier, Some(Verifier::Bearer { .. }))
    }

    /// Whether the gate checks a signature over the body (so the body must be read whole
    /// before the request is let in).
    pub fn signs_body(&self) -> bool {
        matches!(
            self.verifier,
            Some(Verifier::StandardWebhooks { .. } | Verifier::Body { .. })
        )
    }

    /// Verifies a signature over the raw `body` (after [`Gate::check_head`]). For Standard
    /// Webhooks, the `webhook-id` to claim in [`Gate::replays`].
    pub fn check_body<'h>(
        &self,
        headers: &'h HeaderMap,
        body: &[u8],
    ) -> Result<Option<&'h [u8]>, Unauthorized> {
        let header = |name: &HeaderName| headers.get(name).map(HeaderValue::as_bytes);
        match &self.verifier {
            None | Some(Verifier::Bearer { .. }) => Ok(None),
            Some(Verifier::StandardWebhooks { keys, .. }) => {
                let (id, timestamp) = (
                    header(&ID).ok_or(Unauthorized)?,
                    header(&TIMESTAMP).ok_or(Unauthorized)?,
                );
                let signatures = header(&SIGNATURE).ok_or(Unauthorized)?;
                signature::verify_standard(keys, id, timestamp, body, signatures)
                    .then_some(Some(id))
                    .ok_or(Unauthorized)
            }
            Some(Verifier::Body {
                header: name,
                key,
                encoding,
                prefix,
            }) => {
                let value = header(name).ok_or(Unauthorized)?;
                let encoded = value.strip_prefix(prefix.as_bytes()).ok_or(Unauthorized)?;
                let decoded = match encoding {
                    Encoding::Hex => signature::unhex(encoded),
                    Encoding::Base64 => signature::BASE64.decode(encoded).ok(),
                };
                let decoded = decoded.ok_or(Unauthorized)?;
                hmac::verify(key, body, &decoded)
                    .map(|()| None)
                    .map_err(|_| Unauthorized)
            }
        }
    }

    /// The headers that authenticate a POST of `body` to the route as its `auth` asks, sent
    /// as message `id` now: what `fanout dead-letters replay --via` sends to a running fanout.
    /// Signatures use the gate's first key; a bearer token (kept only as an HMAC here) is
    /// read again from `env`, as `route` writes it.
    pub fn credentials(
        &self,
        route: &RouteSpec,
        env: &dyn Fn(&str) -> Option<String>,
        id: &str,
        body: &[u8],
    ) -> Result<Vec<(HeaderName, HeaderValue)>, StartupError> {
        let value = |text: String| {
            HeaderValue::try_from(text).map_err(|_| {
                StartupError(format!(
                    "route \"{}\", auth: not a header value",
                    route.name
                ))
            })
        };
        Ok(match (&self.verifier, &route.auth) {
            (None, _) => Vec::new(),
            (Some(Verifier::Bearer { .. }), Some(Auth::Bearer(tokens))) => {
                let written = tokens.first().copied().unwrap_or_default();
                let token = substitute(written, env)
                    .map_err(|e| StartupError(format!("route \"{}\", auth: {e}", route.name)))?;
                vec![(AUTHORIZATION, value(format!("Bearer {token}"))?)]
            }
            (Some(Verifier::Bearer { .. }), _) => Vec::new(),
            (Some(Verifier::StandardWebhooks { keys, .. }), _) => {
                let timestamp = unix_now().to_string();
                let first = &keys[..keys.len().min(1)];
                let signed =
                    signature::standard_header(first, id.as_bytes(), timestamp.as_bytes(), body);
                vec![
                    (ID, value(id.to_owned())?),
                    (TIMESTAMP, value(timestamp)?),
                    (SIGNATURE, value(signed)?),
                ]
            }
            (
                Some(Verifier::Body {
                    header,
                    key,
                    encoding,
                    prefix,
                }),
                _,
            ) => {
                let tag = hmac::sign(key, body);
                let encoded = match encoding {
                    Encoding::Hex => signature::hex(tag.as_ref()),
                    Encoding::Base64 => {
                        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
                    }
                };
                vec![(header.clone(), value(format!("{prefix}{encoded}"))?)]
            }
        })
    }

    /// What a 401 tells the client to send (RFC 6750 for bearer routes).
    pub fn challenge(&self) -> Option<HeaderValue> {
        matches!(self.verifier, Some(Verifier::Bearer { .. }))
            .then(|| HeaderValue::from_static("Bearer realm=\"fanout\""))
    }
}

/// The token of `Bearer <token>` (the scheme in any case, RFC 9110 11.1).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_scheme_in_any_case() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bear"), None);
    }
}
