//! The counters of balance routes: per backend, its tries by outcome, their latency to the
//! answer's head, requests in flight, health and ejections; per route, the answers fanout gave
//! itself (502, 503, 504) and the tries that went on to another backend.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};

use crate::metrics::{counter, gauge, register, LATENCY_BUCKETS};
use crate::spec::{RouteSpec, TargetSpec};

/// How one try on a backend ended, as the `outcome` label of `fanout_backend_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer, by status class (1xx to 5xx).
    Status(u16),
    /// No connection could be opened.
    ConnectError,
    /// No answer within the target's `timeout`.
    Timeout,
    /// The connection failed after the request was sent.
    Error,
}

const OUTCOMES: [&str; 8] = [
    "1xx",
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "connect_error",
    "timeout",
    "error",
];

impl Outcome {
    fn index(self) -> usize {
        match self {
            Outcome::Status(status) => (status / 100).clamp(1, 5) as usize - 1,
            Outcome::ConnectError => 5,
            Outcome::Timeout => 6,
            Outcome::Error => 7,
        }
    }
}

pub struct BackendMetrics {
    requests: [IntCounter; OUTCOMES.len()],
    pub latency: Histogram,
    pub in_flight: IntGauge,
    /// 1 while the backend may be sent requests (its checks pass and it is not ejected); set
    /// at scrape time.
    pub healthy: IntGauge,
    pub ejections: IntCounter,
}

impl BackendMetrics {
    pub fn new(target: &TargetSpec) -> BackendMetrics {
        let opts = |name: &str, help: &str| {
            Opts::new(name, help)
                .const_label("route", target.route)
                .const_label("target", target.name)
        };
        BackendMetrics {
            requests: OUTCOMES.map(|outcome| {
                counter(
                    opts(
                        "fanout_backend_requests_total",
                        "Tries of balance requests on the backend, by outcome (status class of its answer, connect_error, timeout, error).",
                    )
                    .const_label("outcome", outcome),
                )
            }),
            latency: Histogram::with_opts(
                HistogramOpts::from(opts(
                    "fanout_backend_latency_seconds",
                    "Time from a try's start to the backend's answer head.",
                ))
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("histogram options are valid by construction"),
            in_flight: gauge(opts(
                "fanout_backend_in_flight",
                "Requests sent to the backend whose answer is not relayed to the end yet.",
            )),
            healthy: gauge(opts(
                "fanout_backend_healthy",
                "1 if the backend is sent requests: its health checks pass and it is not ejected.",
            )),
            ejections: counter(opts(
                "fanout_backend_ejections_total",
                "Times the backend was left out for a cool-down after failed tries in a row.",
            )),
        }
    }

    pub fn outcome(&self, outcome: Outcome) -> &IntCounter {
        &self.requests[outcome.index()]
    }

    pub(crate) fn register(&self, registry: &Registry) {
        for counter in &self.requests {
            register(registry, counter);
        }
        register(registry, &self.latency);
        register(registry, &self.in_flight);
        register(registry, &self.healthy);
        register(registry, &self.ejections);
    }
}

/// The answers of fanout's own on a balance route, as `status` of
/// `fanout_balance_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnAnswer {
    /// 502: every try failed.
    BadGateway,
    /// 503: no backend is healthy.
    NoBackend,
    /// 504: the backend did not answer in time.
    Timeout,
}

pub struct PoolMetrics {
    errors: [IntCounter; 3],
    /// Tries that went on to another backend after one failed.
    pub retries: IntCounter,
}

impl PoolMetrics {
    pub fn new(route: &RouteSpec) -> PoolMetrics {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("route", route.name);
        PoolMetrics {
            errors: ["502", "503", "504"].map(|status| {
                counter(
                    opts(
                        "fanout_balance_errors_total",
                        "Balance requests answered by fanout itself: 502 every try failed, 503 no healthy backend, 504 the backend did not answer in time.",
                    )
                    .const_label("status", status),
                )
            }),
            retries: counter(opts(
                "fanout_balance_retries_total",
                "Tries of balance requests on another backend after one failed.",
            )),
        }
    }

    pub fn error(&self, answer: OwnAnswer) -> &IntCounter {
        &self.errors[answer as usize]
    }

    pub(crate) fn register(&self, registry: &Registry) {
        for counter in &self.errors {
            register(registry, counter);
        }
        register(registry, &self.retries);
    }
}
