//! The resolved routes: what a binary carries once every default is applied and every check
//! has passed. `expand` turns this into Rust; nothing here is read at run time.

use serde::Deserialize;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct Routes {
    pub server: Server,
    pub routes: Vec<Route>,
}

/// The `server:` section: defaults for start-up knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    /// Default listen address; `fanout --listen` overrides it.
    pub listen: String,
    /// Default request body limit, in bytes.
    pub max_body: u64,
    /// On SIGTERM/SIGINT, how long lanes may keep delivering what they hold.
    pub drain_timeout: Duration,
    /// Period of the per-lane summary log line; zero disables it.
    pub metrics_log_interval: Duration,
    /// A new connection that sends no first byte (and, for h2c, its whole preface) in this
    /// time is closed.
    pub first_byte_timeout: Duration,
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's whole body; past it, 408.
    pub body_read_timeout: Duration,
    /// A connection with no request under way for this long is closed (HTTP/1.1 and h2c).
    pub idle_timeout: Duration,
    /// Open client connections at most; beyond it new ones are closed at once, counted.
    pub max_connections: u64,
    /// TCP keepalive idle time on accepted connections; zero disables it.
    pub tcp_keepalive: Duration,
    /// Concurrent streams one h2c connection may have open.
    pub http2_max_streams: u64,
    /// Largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: u64,
    /// Bytes of event bodies the process holds at most, across every lane; beyond it, 503.
    pub memory_budget: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// The name as written in routes.yaml (used in metrics and the `fanout-route` header).
    pub name: String,
    /// The name as a snake_case Rust identifier (module and field names).
    pub ident: String,
    /// The name as an UpperCamelCase Rust identifier (enum variant).
    pub variant: String,
    pub path: String,
    pub max_body: u64,
    pub targets: Vec<Target>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub name: String,
    /// The name as a snake_case Rust identifier (lane field name).
    pub ident: String,
    /// May hold `${NAME}` placeholders, resolved from the environment at start-up.
    pub url: String,
    /// Extra request headers, in file order; values may hold `${NAME}` placeholders.
    pub headers: Vec<(String, String)>,
    /// PEM file of extra trusted roots for an https target, read at start-up.
    pub ca_file: Option<String>,
    /// Events the lane holds.
    pub buffer: u64,
    /// Body bytes the lane holds.
    pub buffer_bytes: u64,
    pub overflow: Overflow,
    /// Time limit of one delivery attempt.
    pub timeout: Duration,
    /// Deliveries in flight at once.
    pub concurrency: u64,
    pub retry: Retry,
    pub breaker: Breaker,
    /// Speak HTTP/2 to the target (h2c with prior knowledge for http://).
    pub http2: bool,
    /// Deliver many events per request, as NDJSON.
    pub batch: Option<Batch>,
}

/// How a lane groups events into one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// At most this many events per request (their ids travel in one header).
    pub max_events: u64,
    /// At most this many body bytes per request (one line per event), unless one event alone
    /// is larger.
    pub max_bytes: u64,
    /// How long to wait for more events after the first one.
    pub max_wait: Duration,
}

/// The most events one batch may hold: their ids (37 bytes each) travel in one header, which
/// must fit common receivers' limits on one header line (nginx reads a request's header lines
/// into 8 KiB buffers, Node allows 16 KiB for all of them): 200 ids are 7,399 bytes.
pub const MAX_BATCH_EVENTS: u64 = 200;

/// What a full lane does with a new event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Drop the lane's oldest event to make room (counted as dropped, reason overflow).
    DropOldest,
    /// Keep what the lane holds; drop the new event for this lane only.
    DropNewest,
    /// Refuse the whole event with 503: it is enqueued in no lane of the route.
    Reject,
}

impl Overflow {
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::DropOldest => "drop_oldest",
            Overflow::DropNewest => "drop_newest",
            Overflow::Reject => "reject",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    /// Attempts in all, the first one included.
    pub attempts: u32,
    /// Cap of the first retry's delay; doubles with each retry up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Response statuses worth another attempt, sorted and without duplicates.
    pub on: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Breaker {
    /// Consecutive failed attempts that open the circuit.
    pub failures: u32,
    /// First pause after opening; doubles while probes fail, up to `max_cooldown`.
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

/// The statuses retried unless `retry.on` says otherwise: 408, 429 and every 5xx but 501.
pub fn default_retry_statuses() -> Vec<u16> {
    [408, 429, 500].into_iter().chain(502..=599).collect()
}
