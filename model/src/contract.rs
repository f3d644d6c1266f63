//! The names fanout's routes language (at build time) and its server (at run time) must agree
//! on, defined once: the proxy's own paths, the request headers fanout sets on every delivery
//! (which a target's `headers:` may not replace), the `${NAME}` syntax and the body size limit.
//! Always compiled: the server uses it without the YAML parser.

/// Liveness endpoint the proxy answers itself.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Prometheus endpoint the proxy answers itself.
pub const METRICS_PATH: &str = "/metrics";
/// Paths a route may not take.
pub const RESERVED_PATHS: &[&str] = &[HEALTHZ_PATH, METRICS_PATH];

/// Backends a balance route may have at most: a request's tried backends are a 64-bit set.
pub const MAX_BALANCE_BACKENDS: usize = 64;

/// The largest `max_body` a route may have: an event's length lives in 30 bits of its header.
pub const MAX_BODY_LIMIT: u64 = (1 << 30) - 1;

/// Carries the event id to targets.
pub const EVENT_ID: &str = "fanout-event-id";
/// Carries the ids of a batch's events, comma-separated, in line order.
pub const EVENT_IDS: &str = "fanout-event-ids";
/// Carries the route name to targets.
pub const ROUTE: &str = "fanout-route";
/// Carries the attempt number (1 for the first) to targets.
pub const ATTEMPT: &str = "fanout-attempt";
/// Every header named `fanout-...` is fanout's own, today's and tomorrow's.
pub const OWN_HEADER_PREFIX: &str = "fanout-";

/// Headers fanout sets from the event or the url on every delivery.
pub const MESSAGE_HEADERS: &[&str] = &["content-type", "content-length", "host"];
/// Headers that describe one connection, not the message (RFC 9110 7.6.1), and `expect`:
/// fanout manages its connections to targets itself.
pub const CONNECTION_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// The Standard Webhooks headers: what a signed delivery carries (a target that signs may not
/// set them in `headers:`) and what a `standard_webhooks` route verifies.
pub const WEBHOOK_ID: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
pub const SIGNATURE_HEADERS: &[&str] = &[WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE];

/// The key of a Standard Webhooks secret: base64 (padded or not) after an optional `whsec_`,
/// as the official libraries read it. `None` if it is not that, or decodes to nothing.
pub fn whsec_key(secret: &str) -> Option<Vec<u8>> {
    let text = secret.strip_prefix("whsec_").unwrap_or(secret);
    let text = text.trim_end_matches('=');
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut key = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut held) = (0u32, 0u32);
    for c in text.bytes() {
        bits = (bits << 6) | u32::from(value(c)?);
        held += 6;
        if held >= 8 {
            held -= 8;
            key.push((bits >> held) as u8);
        }
    }
    // A lone sixth of a byte is no base64.
    (held < 6 && !key.is_empty()).then_some(key)
}

/// Why a target may not configure the header `name` (any case), if it may not.
pub fn reserved_header(name: &str) -> Option<&'static str> {
    let lower_eq = |reserved: &&str| name.eq_ignore_ascii_case(reserved);
    let own = name.len() >= OWN_HEADER_PREFIX.len()
        && name.as_bytes()[..OWN_HEADER_PREFIX.len()]
            .eq_ignore_ascii_case(OWN_HEADER_PREFIX.as_bytes());
    if own || MESSAGE_HEADERS.iter().any(lower_eq) {
        Some("is set by fanout itself and cannot be configured")
    } else if CONNECTION_HEADERS.iter().any(lower_eq) {
        Some("describes a connection, which fanout manages itself, and cannot be configured")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whsec_secrets_decode_as_the_official_libraries_do() {
        // The Standard Webhooks test vector's secret.
        let key = whsec_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(key.len(), 24);
        assert_eq!(whsec_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Some(key));
        assert_eq!(whsec_key("whsec_aGk="), Some(b"hi".to_vec()));
        assert_eq!(whsec_key("whsec_aGk"), Some(b"hi".to_vec()));
        assert_eq!(whsec_key("whsec_"), None);
        assert_eq!(whsec_key("whsec_not base64"), None);
        assert_eq!(whsec_key("whsec_a"), None);
    }

    #[test]
    fn every_fanout_header_is_reserved_in_any_case() {
        for name in [
            EVENT_ID,
            EVENT_IDS,
            ROUTE,
            ATTEMPT,
            "Fanout-Future-Thing",
            "HOST",
        ] {
            assert!(reserved_header(name).is_some(), "{name}");
        }
        assert!(reserved_header("Transfer-Encoding").is_some());
        assert!(reserved_header("X-Token").is_none());
        assert!(reserved_header("fanout").is_none());
        assert!(reserved_header("authorization").is_none());
    }
}

/// One piece of a text that may hold `${NAME}` or `${NAME:-default}` placeholders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text taken as it is.
    Literal(&'a str),
    /// `${name}`, read from the environment at start-up; `default` (after `:-`) stands in when
    /// the variable is unset or empty, as in a shell.
    Variable {
        name: &'a str,
        default: Option<&'a str>,
    },
}

/// A malformed placeholder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaceholderError<'a> {
    /// `${` without its `}`.
    Unclosed,
    /// A name that is not letters, digits and `_` (not starting with a digit).
    BadName(&'a str),
}

/// The pieces of `text`, in order: the one definition of the `${NAME}` syntax, used by the
/// build-time checks and the start-up substitution alike.
pub fn pieces(text: &str) -> Pieces<'_> {
    Pieces { rest: text }
}

/// Iterator returned by [`pieces`].
pub struct Pieces<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Result<Piece<'a>, PlaceholderError<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(start) = self.rest.find("${") else {
            let literal = self.rest;
            self.rest = "";
            return Some(Ok(Piece::Literal(literal)));
        };
        if start > 0 {
            let literal = &self.rest[..start];
            self.rest = &self.rest[start..];
            return Some(Ok(Piece::Literal(literal)));
        }
        let inner = &self.rest[2..];
        let Some(end) = inner.find('}') else {
            self.rest = "";
            return Some(Err(PlaceholderError::Unclosed));
        };
        let (name, default) = match inner[..end].split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (&inner[..end], None),
        };
        self.rest = &inner[end + 1..];
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        Some(if valid {
            Ok(Piece::Variable { name, default })
        } else {
            Err(PlaceholderError::BadName(name))
        })
    }
}

#[cfg(test)]
mod placeholder_tests {
    use super::*;

    fn all(text: &str) -> [Option<Result<Piece<'_>, PlaceholderError<'_>>>; 4] {
        let mut it = pieces(text);
        [it.next(), it.next(), it.next(), it.next()]
    }

    #[test]
    fn placeholders_with_and_without_defaults() {
        assert_eq!(
            all("http://${HOST:-127.0.0.1:8001}/in"),
            [
                Some(Ok(Piece::Literal("http://"))),
                Some(Ok(Piece::Variable {
                    name: "HOST",
                    default: Some("127.0.0.1:8001")
                })),
                Some(Ok(Piece::Literal("/in"))),
                None
            ]
        );
        assert_eq!(
            all("Bearer ${TOKEN}"),
            [
                Some(Ok(Piece::Literal("Bearer "))),
                Some(Ok(Piece::Variable {
                    name: "TOKEN",
                    default: None
                })),
                None,
                None
            ]
        );
        assert_eq!(all("cost: $5")[0], Some(Ok(Piece::Literal("cost: $5"))));
        assert_eq!(all("${}")[0], Some(Err(PlaceholderError::BadName(""))));
        assert_eq!(all("${1X}")[0], Some(Err(PlaceholderError::BadName("1X"))));
        assert_eq!(all("x${A")[1], Some(Err(PlaceholderError::Unclosed)));
    }
}
