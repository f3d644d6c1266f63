//! Counters, gauges and histograms of routes, lanes and connections (their Prometheus text and
//! the periodic log line are `report`'s).
//!
//! Each lane and route owns its metric handles (atomics with the route and target as constant
//! labels), so the hot path increments an atomic and never looks a label up. The registry only
//! gathers them at scrape time, when the gauges that describe a queue (depth, age) are read.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};

use crate::spec::{RouteSpec, TargetSpec};
use crate::storage::dead_letter::Reason;

/// Upper bounds of the delivery latency buckets, in seconds.
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why an event was refused at ingest, as the `reason` label of
/// `fanout_events_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// A reject lane of the route was full (503).
    LaneFull,
    /// The body was over the route's `max_body` (413).
    BodyTooLarge,
    /// The client's body could not be read to the end (400).
    BodyUnreadable,
    /// The server was shutting down (503).
    ShuttingDown,
    /// The client did not send the whole body within `body_read_timeout` (408).
    BodyTimeout,
    /// Holding the event would take the process over `memory_budget` (503).
    MemoryBudget,
    /// Logging the event would take a durable route over its `disk_buffer` (503).
    DiskFull,
    /// A durable route's log could not be written, or is not open yet (503).
    DiskError,
    /// The request's credentials (token or signature) were missing or wrong (401).
    Unauthorized,
    /// The route's `rate_limit` was used up (429).
    RateLimited,
    /// The `Idempotency-Key` was not 1 to 255 visible ASCII characters (400).
    BadIdempotencyKey,
}

impl RejectReason {
    const ALL: [RejectReason; 11] = [
        RejectReason::LaneFull,
        RejectReason::BodyTooLarge,
        RejectReason::BodyUnreadable,
        RejectReason::ShuttingDown,
        RejectReason::BodyTimeout,
        RejectReason::MemoryBudget,
        RejectReason::DiskFull,
        RejectReason::DiskError,
        RejectReason::Unauthorized,
        RejectReason::RateLimited,
        RejectReason::BadIdempotencyKey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::LaneFull => "lane_full",
            RejectReason::BodyTooLarge => "body_too_large",
            RejectReason::BodyUnreadable => "body_unreadable",
            RejectReason::ShuttingDown => "shutting_down",
            RejectReason::BodyTimeout => "body_timeout",
            RejectReason::MemoryBudget => "memory_budget",
            RejectReason::DiskFull => "disk_full",
            RejectReason::DiskError => "disk_error",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::BadIdempotencyKey => "bad_idempotency_key",
        }
    }
}

/// Ingest counters of one route.
pub struct RouteMetrics {
    pub accepted: IntCounter,
    /// One counter per [`RejectReason`], in `RejectReason::ALL` order.
    rejected: [IntCounter; RejectReason::ALL.len()],
    /// Requests whose `Idempotency-Key` (or Standard Webhooks `webhook-id`) was already
    /// taken: answered 202 with the first event's id, not taken in again.
    pub duplicates: IntCounter,
}

impl RouteMetrics {
    pub fn new(route: &RouteSpec) -> RouteMetrics {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("route", route.name);
        RouteMetrics {
            accepted: counter(opts(
                "fanout_events_accepted_total",
                "Events answered 202: each is in every lane of its route.",
            )),
            duplicates: counter(opts(
                "fanout_events_duplicate_total",
                "Requests whose Idempotency-Key or webhook-id was already taken: answered 202 with the first event's id.",
            )),
            rejected: RejectReason::ALL.map(|reason| {
                counter(
                    opts(
                        "fanout_events_rejected_total",
                        "Events refused at ingest, by reason.",
                    )
                    .const_label("reason", reason.as_str()),
                )
            }),
        }
    }

    pub fn rejected(&self, reason: RejectReason) -> &IntCounter {
        &self.rejected[reason as usize]
    }

    pub(crate) fn register(&self, registry: &Registry) {
        register(registry, &self.accepted);
        register(registry, &self.duplicates);
        for counter in &self.rejected {
            register(registry, counter);
        }
    }
}

/// Delivery metrics of one lane (one route-target pair).
pub struct LaneMetrics {
    pub delivered: IntCounter,
    pub retries: IntCounter,
    pub failed: IntCounter,
    pub dropped_overflow: IntCounter,
    pub dropped_shutdown: IntCounter,
    pub dropped_panic: IntCounter,
    /// Delivery workers restarted after a panic.
    pub worker_restarts: IntCounter,
    /// Events written to the lane's dead-letter file, one counter per [`Reason`] in
    /// `Reason::ALL` order.
    pub dead_letters: [IntCounter; 3],
    /// Dead-letter writes that failed (each is tried again; its events stay held meanwhile).
    pub dead_letter_errors: IntCounter,
    /// Events taken from the queue and not yet delivered, failed or dropped.
    pub inflight: IntGauge,
    pub circuit_open: IntGauge,
    pub duration: Histogram,
    /// Set from the queue at scrape time.
    pub(crate) depth: IntGauge,
    /// Set from the queue at scrape time.
    pub(crate) oldest_age: prometheus::Gauge,
}

impl LaneMetrics {
    pub fn new(target: &TargetSpec) -> LaneMetrics {
        let opts = |name: &str, help: &str| {
            Opts::new(name, help)
                .const_label("route", target.route)
                .const_label("target", target.name)
        };
        let dropped = |reason: &str| {
            counter(
                opts(
                    "fanout_lane_dropped_total",
                    "Events a lane dropped without delivering them, by reason.",
                )
                .const_label("reason", reason),
            )
        };
        LaneMetrics {
            delivered: counter(opts(
                "fanout_lane_delivered_total",
                "Events the target answered with 2xx.",
            )),
            retries: counter(opts(
                "fanout_lane_retries_total",
                "Delivery attempts after the first.",
            )),
            failed: counter(opts(
                "fanout_lane_failed_total",
                "Events given up: a permanent status, every attempt failed, or older than max_age.",
            )),
            dropped_overflow: dropped("overflow"),
            dropped_shutdown: dropped("shutdown"),
            dropped_panic: dropped("panic"),
            worker_restarts: counter(opts(
                "fanout_lane_worker_restarts_total",
                "Delivery workers restarted after a panic.",
            )),
            dead_letters: Reason::ALL.map(|reason| {
                counter(
                    opts(
                        "fanout_lane_dead_letters_total",
                        "Events written to the lane's dead-letter file, by reason.",
                    )
                    .const_label("reason", reason.as_str()),
                )
            }),
            dead_letter_errors: counter(opts(
                "fanout_lane_dead_letter_errors_total",
                "Dead-letter writes that failed; each is tried again, its events held until written.",
            )),
            inflight: gauge(opts(
                "fanout_lane_inflight",
                "Events a delivery worker holds (sending, backing off or waiting on the breaker).",
            )),
            circuit_open: gauge(opts(
                "fanout_lane_circuit_open",
                "1 while the lane's circuit breaker keeps it from sending.",
            )),
            duration: Histogram::with_opts(
                HistogramOpts::from(opts(
                    "fanout_delivery_duration_seconds",
                    "Duration of each delivery attempt, to response or error.",
                ))
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("histogram options are valid by construction"),
            depth: gauge(opts("fanout_lane_depth", "Events waiting in the lane.")),
            oldest_age: prometheus::Gauge::with_opts(opts(
                "fanout_lane_oldest_age_seconds",
                "Age of the oldest waiting event; a growing value means a stuck target.",
            ))
            .expect("gauge options are valid by construction"),
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped_overflow.get() + self.dropped_shutdown.get() + self.dropped_panic.get()
    }

    pub(crate) fn register(&self, registry: &Registry) {
        register(registry, &self.delivered);
        register(registry, &self.retries);
        register(registry, &self.failed);
        register(registry, &self.dropped_overflow);
        register(registry, &self.dropped_shutdown);
        register(registry, &self.dropped_panic);
        register(registry, &self.worker_restarts);
        for counter in &self.dead_letters {
            register(registry, counter);
        }
        register(registry, &self.dead_letter_errors);
        register(registry, &self.inflight);
        register(registry, &self.circuit_open);
        register(registry, &self.duration);
        register(registry, &self.depth);
        register(registry, &self.oldest_age);
    }
}

/// Client connections of the whole server.
pub struct ConnectionMetrics {
    pub open: IntGauge,
    /// Connections closed at once because `max_connections` were open.
    pub refused: IntCounter,
    /// Connections closed because they sent nothing within `first_byte_timeout`.
    pub first_byte_timeouts: IntCounter,
    /// Connections closed after `idle_timeout` with no request under way.
    pub idle_closed: IntCounter,
    /// TLS connections whose handshake failed (or that closed before finishing it).
    pub tls_failures: IntCounter,
    /// Bytes of event bodies held in memory; set at scrape time.
    pub(crate) held_bytes: IntGauge,
}

impl Default for ConnectionMetrics {
    fn default() -> Self {
        let closed = |reason: &str| {
            counter(
                Opts::new(
                    "fanout_connections_closed_total",
                    "Client connections fanout closed itself, by reason.",
                )
                .const_label("reason", reason),
            )
        };
        ConnectionMetrics {
            open: gauge(Opts::new(
                "fanout_connections_open",
                "Client connections open now.",
            )),
            refused: closed("max_connections"),
            first_byte_timeouts: closed("first_byte_timeout"),
            idle_closed: closed("idle_timeout"),
            tls_failures: closed("tls_handshake"),
            held_bytes: gauge(Opts::new(
                "fanout_memory_held_bytes",
                "Bytes of event bodies held in memory (counted against server.memory_budget).",
            )),
        }
    }
}

impl ConnectionMetrics {
    pub(crate) fn register(&self, registry: &Registry) {
        register(registry, &self.open);
        register(registry, &self.refused);
        register(registry, &self.first_byte_timeouts);
        register(registry, &self.idle_closed);
        register(registry, &self.tls_failures);
        register(registry, &self.held_bytes);
    }
}

pub(crate) fn counter(opts: Opts) -> IntCounter {
    IntCounter::with_opts(opts).expect("counter options are valid by construction")
}

pub(crate) fn gauge(opts: Opts) -> IntGauge {
    IntGauge::with_opts(opts).expect("gauge options are valid by construction")
}

pub(crate) fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: &C,
) {
    registry
        .register(Box::new(collector.clone()))
        .expect("every route-target pair is unique, so no metric is registered twice");
}
