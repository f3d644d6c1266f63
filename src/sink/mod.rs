//! Sinks: how a lane's delivery workers reach its target, one module per kind of target behind
//! one interface. An [`Endpoint`] is a target resolved at start-up (`${NAME}` read, clients
//! built), shared by the lane's workers; a [`Sink`] is one worker's way to it (its connection);
//! [`Sink::send`] sends one parcel and says how it went, in terms every kind shares
//! ([`Outcome`]). Retries, backoff, the breaker and the counting are `delivery`'s, the same for
//! every kind.
//!
//! A new kind of target (NATS, say) is a module here, a variant of `Endpoint` and `Sink`, and
//! a variant of the spec's `Endpoint` in `fanout-model`.

pub mod breaker;
pub mod http;
pub mod nats;
pub mod parcel;

use std::time::Duration;

use crate::ops::startup::StartupError;
use crate::sink::breaker::Breaker;
use crate::sink::parcel::Parcel;
use crate::spec::{self, TargetSpec};

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

    /// The environment `${NAME}` placeholders are read from.
    pub fn env(&self) -> &'a dyn Fn(&str) -> Option<String> {
        self.env
    }
}

/// Where a route-target pair's events go: the target as compiled in, resolved at start-up,
/// and the breaker that keeps delivery from hammering it when it is dead. Knows nothing of
/// where the events wait (`crate::storage`).
pub struct Target {
    pub spec: &'static TargetSpec,
    /// Each delivery worker connects through it.
    pub endpoint: Endpoint,
    pub breaker: Breaker,
}

impl Target {
    pub fn resolve(
        spec: &'static TargetSpec,
        resolver: &mut Resolver<'_>,
    ) -> Result<Target, StartupError> {
        Ok(Target {
            spec,
            endpoint: Endpoint::resolve(spec, resolver)?,
            breaker: Breaker::new(&spec.delivery.breaker),
        })
    }
}

/// A target resolved at start-up.
pub enum Endpoint {
    Http(http::Endpoint),
    Nats(nats::Endpoint),
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
            spec::Endpoint::Nats(nats) => {
                nats::Endpoint::resolve(spec, nats, resolver.env).map(Endpoint::Nats)
            }
        }
    }

    /// As the lane's workers start: a kind with a connection of its own to keep (NATS)
    /// begins connecting, so its state shows before the first event.
    pub async fn start(&self) {
        match self {
            Endpoint::Http(_) => {}
            Endpoint::Nats(endpoint) => endpoint.start().await,
        }
    }

    /// Whether the kind keeps a connection of its own and it is down now (a NATS client
    /// not connected): its events wait meanwhile.
    pub fn disconnected(&self) -> bool {
        match self {
            Endpoint::Http(_) => false,
            Endpoint::Nats(endpoint) => !endpoint.connected(),
        }
    }

    /// Sets the kind's own gauges from its state (at scrape time).
    pub fn refresh_gauges(&self) {
        match self {
            Endpoint::Http(_) => {}
            Endpoint::Nats(endpoint) => endpoint.refresh_gauge(),
        }
    }

    /// Registers the kind's own metrics (a NATS target's connection state).
    pub fn register(&self, registry: &prometheus::Registry) {
        match self {
            Endpoint::Http(_) => {}
            Endpoint::Nats(endpoint) => endpoint.register(registry),
        }
    }

    /// A worker's own way to the target (nothing is connected until the first send).
    pub fn connect(&self) -> Sink<'_> {
        match self {
            Endpoint::Http(endpoint) => Sink::Http(endpoint.connect()),
            Endpoint::Nats(endpoint) => Sink::Nats(endpoint.connect()),
        }
    }
}

/// One delivery worker's way to its target.
pub enum Sink<'a> {
    Http(http::Sink<'a>),
    Nats(nats::Sink<'a>),
}

impl Sink<'_> {
    /// Sends `parcel` as attempt number `attempt` (1 for the first), within the target's
    /// `timeout`.
    pub async fn send(&mut self, parcel: &Parcel, attempt: u32) -> Outcome {
        match self {
            Sink::Http(sink) => sink.send(parcel, attempt).await,
            Sink::Nats(sink) => sink.send(parcel, attempt).await,
        }
    }
}

/// How one attempt ended.
pub enum Outcome {
    /// The target took the parcel.
    Delivered,
    /// The target refused it for good (an HTTP 4xx other than 408/429, a 501, ...).
    Permanent(Why),
    /// Worth another attempt: no answer, an error on the way, or a refusal the target may
    /// change its mind about (`retry.on`); `retry_after` if the target asked for a delay.
    Retryable {
        why: Why,
        retry_after: Option<Duration>,
    },
}

/// Why an attempt did not deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// The target answered with this status.
    Status(u16),
    /// No answer: a timeout, a refused connection, a broken one.
    Error(String),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Status(status) => write!(f, "status {status}"),
            Why::Error(error) => f.write_str(error),
        }
    }
}

/// Replaces each `${NAME}` in `text` with the variable's value; `${NAME:-default}` takes
/// `default` when the variable is unset or empty.
pub fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for piece in fanout_model::contract::pieces(text) {
        match piece {
            Ok(fanout_model::contract::Piece::Literal(literal)) => out.push_str(literal),
            Ok(fanout_model::contract::Piece::Variable { name, default }) => {
                match (env(name).filter(|v| !v.is_empty()), default) {
                    (Some(value), _) => out.push_str(&value),
                    (None, Some(default)) => out.push_str(default),
                    (None, None) => {
                        return Err(format!(
                            "environment variable {name} is not set (needed for ${{{name}}})"
                        ))
                    }
                }
            }
            Err(_) => return Err(format!("malformed placeholder in \"{text}\"")),
        }
    }
    Ok(out)
}
