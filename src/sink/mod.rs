//! Sinks: how a lane's delivery workers reach its target, one module per kind of target behind
//! one interface. An [`Endpoint`] is a target resolved at start-up (`${NAME}` read, clients
//! built), shared by the lane's workers; a [`Sink`] is one worker's way to it (its connection);
//! [`Sink::send`] sends one parcel and says how it went, in terms every kind shares
//! ([`Outcome`]). Retries, backoff, the breaker and the counting are `delivery`'s, the same for
//! every kind.
//!
//! A new kind of target (NATS, say) is a module here, a variant of `Endpoint` and `Sink`, and
//! a variant of the spec's `Endpoint` in `fanout-model`.

pub mod http;

use std::time::Duration;

use crate::parcel::Parcel;
use crate::spec::{self, TargetSpec};
use crate::startup::StartupError;

/// What resolving targets at start-up needs: the environment for `${NAME}`, and what kinds
/// share between their targets (HTTP clients, one per CA file and protocol).
pub struct Resolver<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    http: http::Clients,
}

impl<'a> Resolver<'a> {
    /// Resolves with `env`: the process environment, or a test's own.
    pub fn new(env: &'a dyn Fn(&str) -> Option<String>) -> Resolver<'a> {
        Resolver {
            env,
            http: http::Clients::default(),
        }
    }
}

/// A target resolved at start-up.
pub enum Endpoint {
    Http(http::Endpoint),
}

impl Endpoint {
    pub fn resolve(
        spec: &'static TargetSpec,
        resolver: &mut Resolver<'_>,
    ) -> Result<Endpoint, StartupError> {
        match &spec.endpoint {
            spec::Endpoint::Http(http) => {
                http::Endpoint::resolve(spec, http, resolver.env, &mut resolver.http)
                    .map(Endpoint::Http)
            }
        }
    }

    /// A worker's own way to the target (nothing is connected until the first send).
    pub fn connect(&self) -> Sink<'_> {
        match self {
            Endpoint::Http(endpoint) => Sink::Http(endpoint.connect()),
        }
    }
}

/// One delivery worker's way to its target.
pub enum Sink<'a> {
    Http(http::Sink<'a>),
}

impl Sink<'_> {
    /// Sends `parcel` as attempt number `attempt` (1 for the first), within the target's
    /// `timeout`.
    pub async fn send(&mut self, parcel: &Parcel, attempt: u32) -> Outcome {
        match self {
            Sink::Http(sink) => sink.send(parcel, attempt).await,
        }
    }
}

/// How one attempt ended.
pub enum Outcome {
    /// The target took the parcel.
    Delivered,
    /// The target refused it for good (an HTTP 4xx other than 408/429, a 501, ...).
    Permanent(String),
    /// Worth another attempt: no answer, an error on the way, or a refusal the target may
    /// change its mind about (`retry.on`); `retry_after` if the target asked for a delay.
    Retryable {
        why: String,
        retry_after: Option<Duration>,
    },
}
