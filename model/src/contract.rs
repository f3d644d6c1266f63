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
