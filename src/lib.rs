//! fanout: an event fan-out proxy whose routes are compiled into the binary.
//!
//! A client POSTs an event to a route; fanout answers `202 {"id": ...}` at once and repeats the
//! event to every target of the route, each through its own bounded lane with retries, so a
//! slow or dead target never hurts the client or the other targets.
//!
//! # Layout
//! Data flows from top to bottom (ARCHITECTURE.md walks one event through it):
//! - `routes.yaml` → `build.rs` (find, check, track) → the `routes!` macro (`macros/`, over
//!   the shared model in `model/`) → [`routes`]: the generated `Route` enum, path `match`,
//!   `Table` of routes with their lanes, and each route's mode, behind [`table`]; its statics
//!   are the [`spec`] shapes.
//! - [`server`]: accept loop, connections ([`connection`]: protocol, idleness), shutdown and
//!   drain ([`workers`]: the lanes' delivery workers started, drained and stopped).
//! - [`ingest`]: one request → one [`event`] taken in by its route's mode, or an error answer;
//!   first through the route's [`gate`] (credentials via [`signature`], [`rate_limit`]);
//!   [`answer`]: every refusal.
//!   [`tls`]: the listener's certificates; [`admin`]: `/metrics` and `/healthz` elsewhere.
//! - [`balance`]: balance routes, whose requests go to one backend each and whose answers are
//!   relayed ([`request_body`]: a body read whole, for ingest and for a repeatable try).
//! - [`lane`]: where a route-target pair's events wait (its storage: in memory, or a cursor
//!   over its durable route's [`log`] on disk), beside the target's resolved endpoint,
//!   [`breaker`] and metrics; [`idempotency`]: the keys a route remembers.
//! - [`delivery`]: lane workers taking events and sending a [`parcel`] (one event, or a batch)
//!   through a [`sink`] (one module per kind of target: [`sink::http`]), with retries.
//! - [`metrics`]: counters and gauges; [`report`]: their Prometheus text and the periodic log
//!   line.
//! - [`dead_letter`]: where a lane puts what it gives up on; [`data_dir`]: the directory of
//!   logs and dead letters, its lock and its hand-over on a restart; [`tools`]: the
//!   `dead-letters` (list, replay, purge) and `log verify` commands.
//! - [`proxy`]: the state the above share; [`startup`], [`shutdown`], [`cli`], [`demo`]: the
//!   process around it.

extern crate self as fanout;

pub mod admin;
pub mod answer;
pub mod balance;
pub mod breaker;
pub mod cli;
pub mod connection;
pub mod data_dir;
pub mod dead_letter;
pub mod delivery;
pub mod demo;
pub mod event;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub mod gate;
pub mod idempotency;
pub mod ingest;
pub mod lane;
pub mod log;
pub mod metrics;
pub mod parcel;
pub mod proxy;
pub mod rate_limit;
pub mod report;
pub mod request_body;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod signature;
pub mod sink;
pub mod spec;
pub mod startup;
pub mod table;
pub mod tls;
pub mod tools;
pub mod workers;

/// Expands a routes file into a routing table; see the `fanout-macros` crate.
pub use fanout_macros::routes;

/// What generated code names, by absolute path, so it works wherever `routes!` is called.
#[doc(hidden)]
pub mod __private {
    pub use crate::balance::Pool;
    pub use crate::event::Event;
    pub use crate::gate::Gate;
    pub use crate::idempotency::IdempotencyKeys;
    pub use crate::lane::{Admission, Lane, Rejected};
    pub use crate::metrics::RouteMetrics;
    pub use crate::sink::Resolver;
    pub use crate::spec::{
        Auth, BalancePolicy, BatchPolicy, BreakerPolicy, DeliveryPolicy, DiskPolicy, Encoding,
        Endpoint, Fsync, GithubAuth, HealthCheck, HmacAuth, HttpEndpoint, LanePolicy, MethodSet,
        Mode, Overflow, RateLimit, RetryPolicy, RouteSpec, ServerSpec, Signing,
        StandardWebhooksAuth, StatusSet, Storage, Strategy, TargetSpec, TlsFiles,
    };
    pub use crate::startup::StartupError;
    pub use crate::table::{under, RouteTable};
    pub use hyper::header::{HeaderMap, HeaderName};
}
