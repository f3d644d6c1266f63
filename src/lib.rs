//! fanout: an event fan-out proxy whose routes are compiled into the binary.
//!
//! A client POSTs an event to a route; fanout answers `202 {"id": ...}` at once and repeats the
//! event to every target of the route, each through its own bounded lane with retries, so a
//! slow or dead target never hurts the client or the other targets.
//!
//! # Layout
//! Folders follow a request's stages, top to bottom (ARCHITECTURE.md walks one event and one
//! balance request through them):
//! - `routes.yaml` → `build.rs` (find, check, track) → the `routes!` macro (`macros/`, over
//!   the shared model in `model/`) → [`routes`]: the generated `Route` enum, `Route::find`,
//!   `Table` of routes with their lanes or pools, and each route's mode, behind [`table`]; its
//!   statics are the [`spec`] shapes.
//! - [`ingress`]: listeners, connections, TLS, the route lookup that hands a request to its
//!   mode (`ingress::dispatch`), bodies, fanout's own answers, the admin listener.
//! - [`auth`]: a route's gate (credentials, signatures, replays) and rate limit, for both
//!   modes.
//! - The two modes: [`fan_out`] (one [`event`] per request, 202, one lane per target, delivery
//!   workers with retries) and [`balance`] (one backend per request, its answer relayed).
//! - [`storage`]: where a fan-out route's events wait (a lane's queue in memory, or the
//!   route's write-ahead log on disk and each lane's cursor over it) and the dead letters.
//! - [`sink`]: one module per kind of target, what it sends (a parcel: one event or a batch)
//!   and the target's circuit breaker.
//! - [`metrics`]: counters and gauges; [`report`]: their Prometheus text and the periodic log
//!   line.
//! - [`shared`]: the state the above share; [`ops`]: the process around it (flags, start-up,
//!   signals, the data directory, the operator's commands, the demo).

extern crate self as fanout;

pub mod auth;
pub mod balance;
pub mod event;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub mod fan_out;
pub mod ingress;
pub mod metrics;
pub mod ops;
pub mod report;
pub mod routes;
pub mod shared;
pub mod sink;
pub mod spec;
pub mod storage;
pub mod table;

/// Expands a routes file into a routing table; see the `fanout-macros` crate.
pub use fanout_macros::routes;

/// What generated code names, by absolute path, so it works wherever `routes!` is called.
#[doc(hidden)]
pub mod __private {
    pub use crate::auth::gate::Gate;
    pub use crate::balance::Pool;
    pub use crate::event::Event;
    pub use crate::fan_out::idempotency::IdempotencyKeys;
    pub use crate::fan_out::lane::{Admission, Lane, Rejected};
    pub use crate::metrics::RouteMetrics;
    pub use crate::ops::startup::StartupError;
    pub use crate::sink::Resolver;
    pub use crate::spec::{
        Auth, BalancePolicy, BatchPolicy, BreakerPolicy, DeliveryPolicy, DiskPolicy, Encoding,
        Endpoint, Fsync, GithubAuth, HealthCheck, HmacAuth, HttpEndpoint, LanePolicy, MethodSet,
        Mode, NatsAck, NatsAuth, NatsEndpoint, Overflow, RateLimit, RetryPolicy, RouteSpec,
        ServerSpec, Signing, StandardWebhooksAuth, StatusSet, Storage, Strategy, TargetSpec,
        TlsFiles,
    };
    pub use crate::storage::RouteStorage;
    pub use crate::table::{under, RouteTable};
    pub use hyper::header::{HeaderMap, HeaderName};
}
