//! fanout: an event fan-out proxy whose routes are compiled into the binary.
//!
//! A client POSTs an event to a route; fanout answers `202 {"id": ...}` at once and repeats the
//! event to every target of the route, each through its own bounded lane with retries, so a
//! slow or dead target never hurts the client or the other targets.
//!
//! # Layout
//! Data flows from top to bottom:
//! - `routes.yaml` → `build.rs` (find, check, track) → the `routes!` macro (`macros/`, over
//!   the shared model in `model/`) → [`routes`]: the generated `Route` enum, path `match`,
//!   `Lanes` struct and per-route dispatch, shaped by [`spec`].
//! - [`server`]: accept loop, connections ([`connection`]: protocol, idleness), shutdown and
//!   drain.
//! - [`ingest`]: one request → one [`event`] in every [`lane`] of its route, or an error answer.
//! - [`lane`]: a bounded queue with its overflow policy and [`breaker`].
//! - [`delivery`]: lane workers POSTing a [`parcel`] (one event, or a batch) to a [`target`]
//!   over its [`link`]: a connection of its own, or the shared pooled [`client`].
//! - [`metrics`]: Prometheus text and the periodic log line.
//! - [`proxy`]: the state the above share; [`startup`], [`shutdown`], [`cli`], [`demo`]: the
//!   process around it.

extern crate self as fanout;

pub mod breaker;
pub mod cli;
pub mod client;
pub mod connection;
pub mod delivery;
pub mod demo;
pub mod event;
pub mod ingest;
pub mod lane;
pub mod link;
pub mod metrics;
pub mod parcel;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod spec;
pub mod startup;
pub mod target;

/// Expands a routes file into a routing table; see the `fanout-macros` crate.
pub use fanout_macros::routes;

/// What generated code names, by absolute path, so it works wherever `routes!` is called.
#[doc(hidden)]
pub mod __private {
    pub use crate::event::Event;
    pub use crate::lane::{Lane, Rejected};
    pub use crate::spec::{
        BatchPolicy, BreakerPolicy, Overflow, RetryPolicy, RouteSpec, RouteTable, ServerSpec,
        TargetSpec,
    };
}
