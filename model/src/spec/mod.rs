//! What a binary carries of its routes: plain data with `&'static` references, defined once
//! here and used three ways — as the resolved model the checks produce, as the `static`s the
//! `routes!` macro expands to (each struct's expansion is derived from its definition by
//! [`spec_struct!`]), and as what the run time reads. This module needs no dependency, so the
//! server uses it without the YAML parser (`fanout-model` with default features off).
//!
//! A target is an endpoint (where and how to send: one variant per kind) plus a lane policy
//! (how events wait) plus a delivery policy (how they are sent). A route has a mode (what a
//! request means: `fanout` repeats it to every target) and a storage kind (where its events
//! wait until every lane is done with them: `memory`, or `disk` with its [`DiskPolicy`]).
//! Who may post to a route, and how deliveries are signed, are in `security.rs`.

use core::time::Duration;

/// Defines a spec struct and, with the `compile` feature, its expansion as a Rust expression
/// naming `::fanout::__private::<Struct>`: the field list is written once.
macro_rules! spec_struct {
    ($(#[$meta:meta])* pub struct $name:ident {
        $( $(#[$field_meta:meta])* pub $field:ident : $type:ty, )*
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $type, )*
        }

        #[cfg(feature = "compile")]
        impl crate::emit::Emit for $name {
            fn emit(&self) -> proc_macro2::TokenStream {
                $( let $field = crate::emit::Emit::emit(&self.$field); )*
                quote::quote!(::fanout::__private::$name { $( $field: #$field, )* })
            }
        }
    };
}

spec_struct! {
    /// The `server:` section: start-up defaults and the limits on what clients may spend.
    pub struct ServerSpec {
        /// Default listen address; `fanout --listen` overrides it.
        pub listen: &'static str,
        /// Default request body limit, in bytes.
        pub max_body: u64,
        /// On SIGTERM/SIGINT, how long lanes may keep delivering what they hold.
        pub drain_timeout: Duration,
        /// Period of the per-lane summary log line; zero disables it.
        pub metrics_log_interval: Duration,
        /// A new connection must send its first byte (for h2c, its whole preface) within this.
        pub first_byte_timeout: Duration,
        /// Time a client has to send a request's headers; `--header-read-timeout` overrides it.
        pub header_read_timeout: Duration,
        /// Time a client has to send a request's whole body; past it, 408.
        pub body_read_timeout: Duration,
        /// A connection with no request under way for this long is closed.
        pub idle_timeout: Duration,
        /// Open client connections at most; beyond it new ones are closed at once.
        pub max_connections: usize,
        /// TCP keepalive idle time on accepted connections; zero disables it.
        pub tcp_keepalive: Duration,
        /// Concurrent streams one h2c connection may have open.
        pub http2_max_streams: u32,
        /// Largest request head accepted, in bytes.
        pub max_header_bytes: usize,
        /// Bytes of event bodies the process holds at most, across every lane.
        pub memory_budget: usize,
        /// Where durable routes keep their logs, and every lane its dead letters;
        /// `fanout --data-dir` overrides it. May hold `${NAME}` placeholders.
        pub data_dir: Option<&'static str>,
        /// Serve the ingest listener over TLS with this certificate and key; `--tls-cert` and
        /// `--tls-key` override it.
        pub tls: Option<TlsFiles>,
        /// Serve `/metrics` and `/healthz` on this address instead of the ingest listener;
        /// `--admin-listen` overrides it.
        pub admin_listen: Option<&'static str>,
    }
}

/// One route: a path, what a request to it means, where its events wait, and its targets.
/// (Expanded by hand: its targets are references to the targets' own statics.)
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouteSpec {
    pub name: &'static str,
    pub path: &'static str,
    pub max_body: u64,
    pub mode: Mode,
    pub storage: Storage,
    /// How a durable route (`storage: disk`) keeps its log; unused by other storage kinds.
    pub disk: DiskPolicy,
    /// How long an `Idempotency-Key` is remembered; zero turns the header off.
    pub idempotency_window: Duration,
    /// How a client proves it may post to the route; `None`: anyone who reaches the port.
    pub auth: Option<Auth>,
    /// Events the route takes in at most, per period, beyond which it answers 429.
    pub rate_limit: Option<RateLimit>,
    /// `match: { headers: ... }`: request headers (names lowercase) that must all have these
    /// values for a request to take this route; empty: the path alone decides.
    pub match_headers: &'static [(&'static str, &'static str)],
    /// How a balance route (`mode: balance`) picks a backend and fails over; unused by
    /// fan-out routes.
    pub balance: BalancePolicy,
    pub targets: &'static [&'static TargetSpec],
}

impl RouteSpec {
    /// The path without the `/*` of a prefix route (`/items/*` is `/items`), and whether the
    /// route is a prefix route: it then takes that path and every path below it.
    pub fn path_pattern(&self) -> (&'static str, bool) {
        match self.path.strip_suffix("/*") {
            Some(prefix) => (prefix, true),
            None => (self.path, false),
        }
    }
}

spec_struct! {
    /// A balance route: each request goes to one healthy backend (a target) and its answer is
    /// relayed.
    pub struct BalancePolicy {
        pub strategy: Strategy,
        /// The methods the route takes; others get 405.
        pub methods: MethodSet,
        /// Active health checks of every backend, if configured.
        pub health: Option<HealthCheck>,
        /// Tries in all, the first included, each on a backend not tried yet for the request
        /// while one is left.
        pub attempts: u32,
        /// Backend answers that count as a failure worth another backend (idempotent methods
        /// only, unless `retry_non_idempotent`).
        pub retry_on: StatusSet,
        /// Retry POST, PATCH (and other non-idempotent methods) after a timeout or a failing
        /// status too, not only after a connect failure.
        pub retry_non_idempotent: bool,
    }
}

impl BalancePolicy {
    /// A balance route's policy where routes.yaml says nothing (and the value fan-out routes
    /// carry): least in flight, every method, no active checks, 3 tries, every 5xx but 501
    /// worth another backend for idempotent methods.
    pub const DEFAULT: BalancePolicy = BalancePolicy {
        strategy: Strategy::LeastInflight,
        methods: MethodSet::ALL,
        health: None,
        attempts: 3,
        retry_on: StatusSet(&[(500, 500), (502, 599)]),
        retry_non_idempotent: false,
    };
}

spec_struct! {
    /// `health:` of a balance route: a GET of `path` on every backend each `interval`.
    pub struct HealthCheck {
        pub path: &'static str,
        pub interval: Duration,
        pub timeout: Duration,
        /// Consecutive failed checks that mark a healthy backend unhealthy.
        pub unhealthy_after: u32,
        /// Consecutive passed checks that mark an unhealthy backend healthy again.
        pub healthy_after: u32,
    }
}

/// HTTP methods as a set of bits, one per standard method (see [`MethodSet::METHODS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodSet(pub u16);

impl MethodSet {
    /// The standard methods routes.yaml may name, in bit order.
    pub const METHODS: [&'static str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    /// Every method, the non-standard ones included.
    pub const ALL: MethodSet = MethodSet(u16::MAX);

    /// The bit of a standard method, by name.
    pub fn bit(name: &str) -> Option<u16> {
        Self::METHODS
            .iter()
            .position(|m| *m == name)
            .map(|i| 1 << i)
    }

    pub fn contains_bit(self, bit: u16) -> bool {
        self.0 & bit != 0
    }

    /// `GET, POST`: the methods in the set, for an `Allow` header.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::METHODS
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, name)| *name)
    }
}

spec_struct! {
    /// The log of a durable route.
    pub struct DiskPolicy {
        /// Bytes of log (records not yet finished by every lane) the route keeps at most;
        /// beyond it ingest answers 503.
        pub budget: u64,
        pub fsync: Fsync,
    }
}

/// When a durable route's log is synced to the disk, and so when its 202 is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// The 202 follows the fsync that covers the event (one fsync covers every event written
    /// since the last: group commit).
    Always,
    /// The 202 follows the write to the OS; the OS syncs when it likes.
    Never,
    /// The 202 follows the write to the OS; a sync follows within this.
    Every(Duration),
}

impl core::fmt::Display for Fsync {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Fsync::Always => f.write_str("always"),
            Fsync::Never => f.write_str("never"),
            Fsync::Every(period) => write!(f, "{}ms", period.as_millis()),
        }
    }
}

spec_struct! {
    /// One target of a route, with its effective settings (defaults applied).
    pub struct TargetSpec {
        /// Name of the route this target belongs to.
        pub route: &'static str,
        pub name: &'static str,
        pub endpoint: Endpoint,
        /// A balance route's share of requests for this backend, relative to the others'
        /// (1 unless set); unused by fan-out routes.
        pub weight: u32,
        pub lane: LanePolicy,
        pub delivery: DeliveryPolicy,
    }
}

/// Where a target is and how to reach it: one variant per kind of target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Endpoint {
    /// An HTTP(S) url.
    Http(HttpEndpoint),
    /// A NATS subject.
    Nats(NatsEndpoint),
}

impl Endpoint {
    /// The target's address as written in routes.yaml (`${NAME}` kept), for people.
    pub fn address(&self) -> &'static str {
        match self {
            Endpoint::Http(http) => http.url,
            Endpoint::Nats(nats) => nats.url,
        }
    }
}

spec_struct! {
    /// A NATS target: every event is published to `subject` on the servers of `url`.
    pub struct NatsEndpoint {
        /// `nats://host:port` or `tls://host:port`, several separated by commas (servers of
        /// one cluster); may hold `${NAME}` placeholders.
        pub url: &'static str,
        /// Where events are published, `{route}` and `{target}` filled in at build time.
        pub subject: &'static str,
        /// Whether an event counts as delivered only once a JetStream stream acknowledged it
        /// (`ack: stream`, the default), or once the server has it (`ack: none`, core NATS).
        pub ack: NatsAck,
        /// How fanout authenticates to the servers.
        pub auth: NatsAuth,
        /// PEM file of extra trusted roots for `tls://` servers, read at start-up; may hold
        /// `${NAME}` placeholders.
        pub ca_file: Option<&'static str>,
    }
}

/// How a NATS target authenticates; every text may hold `${NAME}` placeholders.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NatsAuth {
    None,
    Token(&'static str),
    UserPassword {
        user: &'static str,
        password: &'static str,
    },
    /// The path of a `.creds` file (a user JWT and its NKey seed), read at start-up.
    Creds(&'static str),
}

spec_struct! {
    /// An HTTP(S) target.
    pub struct HttpEndpoint {
        /// May hold `${NAME}` placeholders, resolved from the environment at start-up.
        pub url: &'static str,
        /// Extra request headers; values may hold `${NAME}` placeholders.
        pub headers: &'static [(&'static str, &'static str)],
        /// PEM file of extra trusted roots for an https target, read at start-up; may hold
        /// `${NAME}` placeholders.
        pub ca_file: Option<&'static str>,
        /// Speak HTTP/2 (h2c with prior knowledge for http://, ALPN for https://).
        pub http2: bool,
        /// Sign every delivery with Standard Webhooks headers.
        pub sign: Option<Signing>,
    }
}

spec_struct! {
    /// How a lane holds the events waiting for its target.
    pub struct LanePolicy {
        /// Events the lane holds.
        pub buffer: usize,
        /// Body bytes the lane holds.
        pub buffer_bytes: usize,
        pub overflow: Overflow,
    }
}

spec_struct! {
    /// How a lane's workers send events to its target.
    pub struct DeliveryPolicy {
        /// Time limit of one delivery attempt.
        pub timeout: Duration,
        /// Deliveries in flight at once.
        pub concurrency: usize,
        pub retry: RetryPolicy,
        pub breaker: BreakerPolicy,
        /// Deliver many events per request, as NDJSON.
        pub batch: Option<BatchPolicy>,
        /// An event still undelivered this long after it was accepted is given up
        /// (dead-lettered with reason `expired`).
        pub max_age: Option<Duration>,
    }
}

spec_struct! {
    pub struct RetryPolicy {
        /// Attempts in all, the first one included.
        pub attempts: u32,
        /// Cap of the first retry's delay; doubles with each retry up to `max_backoff`.
        pub backoff: Duration,
        pub max_backoff: Duration,
        /// Response statuses worth another attempt.
        pub on: StatusSet,
    }
}

spec_struct! {
    pub struct BreakerPolicy {
        /// Consecutive failed attempts that open the circuit.
        pub failures: u32,
        /// First pause after opening; doubles while probes fail, up to `max_cooldown`.
        pub cooldown: Duration,
        pub max_cooldown: Duration,
    }
}

spec_struct! {
    /// How a lane groups events into one request: it sends as soon as `max_events` or
    /// `max_bytes` is reached, or `max_wait` after it took the batch's first event.
    pub struct BatchPolicy {
        pub max_events: usize,
        pub max_bytes: usize,
        pub max_wait: Duration,
    }
}

/// HTTP statuses as sorted, disjoint, inclusive ranges: `408, 429, 500, 502-599` is four.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusSet(pub &'static [(u16, u16)]);

impl StatusSet {
    pub fn contains(&self, status: u16) -> bool {
        self.0
            .iter()
            .any(|&(first, last)| (first..=last).contains(&status))
    }
}

impl core::fmt::Display for StatusSet {
    /// `408,429,500,502-599`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, &(first, last)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match last - first {
                0 => write!(f, "{first}")?,
                1 => write!(f, "{first},{last}")?,
                _ => write!(f, "{first}-{last}")?,
            }
        }
        Ok(())
    }
}

/// An enum of routes.yaml words: every value and its spelling.
pub trait Spelled: Copy + 'static {
    /// Every value, in the order routes.yaml documents them.
    const ALL: &'static [Self];
    /// Their spellings, in the same order.
    const NAMES: &'static [&'static str];
    fn as_str(self) -> &'static str;
}

/// Defines a unit-only enum with its routes.yaml spelling and, with the `compile` feature, its
/// expansion: the variant list is written once.
macro_rules! spec_enum {
    ($(#[$meta:meta])* pub enum $name:ident {
        $( $(#[$variant_meta:meta])* $variant:ident = $text:literal, )*
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )*
        }

        impl $name {
            /// As written in routes.yaml.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )*
                }
            }
        }

        impl crate::spec::Spelled for $name {
            const ALL: &'static [$name] = &[ $( $name::$variant, )* ];
            const NAMES: &'static [&'static str] = &[ $( $text, )* ];

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        #[cfg(feature = "compile")]
        impl crate::emit::Emit for $name {
            fn emit(&self) -> proc_macro2::TokenStream {
                match self {
                    $( $name::$variant => quote::quote!(::fanout::__private::$name::$variant), )*
                }
            }
        }
    };
}

mod security;
pub use security::*;

spec_enum! {
    /// When an event published to a NATS target counts as delivered.
    pub enum NatsAck {
        /// Once the JetStream stream on its subject acknowledged it (a PubAck), stored once
        /// per event id (`Nats-Msg-Id`).
        Stream = "stream",
        /// Once the server has it (core NATS): no subscriber may have seen it.
        None = "none",
    }
}

spec_enum! {
    /// What a full lane does with a new event.
    pub enum Overflow {
        /// Drop the lane's oldest event to make room (counted as dropped, reason overflow).
        DropOldest = "drop_oldest",
        /// Keep what the lane holds; drop the new event for this lane only.
        DropNewest = "drop_newest",
        /// Refuse the whole event with 503: it is enqueued in no lane of the route.
        Reject = "reject",
    }
}

spec_enum! {
    /// What a request to a route means.
    pub enum Mode {
        /// Answer 202 at once and repeat the event to every target.
        Fanout = "fanout",
        /// Send each request to one healthy backend (a target) and relay its answer.
        Balance = "balance",
    }
}

spec_enum! {
    /// How a balance route picks among its healthy backends.
    pub enum Strategy {
        /// The backend with the fewest requests in flight for its weight; ties go round.
        LeastInflight = "least_inflight",
        /// Each backend in turn, as often as its weight says (smooth weighted round robin).
        RoundRobin = "round_robin",
        /// A backend at random, weighted.
        Random = "random",
    }
}

spec_enum! {
    /// Where a route's events wait until every lane of the route is done with them.
    pub enum Storage {
        /// In the process's memory: lost on a crash or SIGKILL.
        Memory = "memory",
        /// In a log on local disk, written before the 202: survives a crash or a restart.
        Disk = "disk",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets_match_and_print_as_ranges() {
        let set = StatusSet(&[(408, 408), (429, 429), (500, 500), (502, 599)]);
        assert!(set.contains(503) && set.contains(408) && !set.contains(501));
        assert_eq!(set.to_string(), "408,429,500,502-599");
        assert_eq!(
            StatusSet(&[(500, 501), (503, 503)]).to_string(),
            "500,501,503"
        );
        assert_eq!(StatusSet(&[]).to_string(), "");
    }
}
