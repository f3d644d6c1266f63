//! Balance routes (`mode: balance`): each request goes to one healthy backend (a target of the
//! route), chosen by the route's strategy, and the backend's answer is relayed; a failed try
//! goes on to another backend as far as the request's method and body allow.
//!
//! - [`Pool`] (here): the route's backends and how one is picked;
//! - `serve`: one request, from the route's checks to a relayed answer or fanout's own;
//! - `backend`: one backend (endpoint, connections, health, counters) and forwarded paths;
//! - `connections`: a backend's keep-alive HTTP/1.1 connections or its HTTP/2 one;
//! - `health`: active checks' verdict and passive ejection; `checks` runs the checks;
//! - `forward`: the headers of a relayed request and answer; `relay`: the answer's body;
//! - `grpc`: fanout's own answers to gRPC calls; `metrics`: the counters;
//! - `nats`: backends that are NATS subjects, each request a NATS request.

mod backend;
mod checks;
mod connections;
mod forward;
mod grpc;
mod health;
mod metrics;
mod nats;
mod relay;
mod serve;

pub use grpc::{is_grpc, status_of as grpc_status};
pub use relay::{Relay, Reply};
pub use serve::{serve, Context};

use hyper::header::HeaderValue;
use prometheus::Registry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::task::JoinSet;

use fanout_model::contract::MAX_BALANCE_BACKENDS;

use crate::ops::startup::StartupError;
use crate::sink::Resolver;
use crate::spec::{self, RouteSpec, Strategy, TargetSpec};
use backend::Backend;
use metrics::PoolMetrics;
use nats::Requester;

/// A balance route's backends.
pub struct Pool {
    pub route: &'static RouteSpec,
    /// HTTP backends (none if the route's backends are NATS subjects).
    backends: Box<[Arc<Backend>]>,
    /// NATS backends (none if the route's backends are HTTP): a route has one kind.
    requesters: Box<[Arc<Requester>]>,
    /// Backend indices in smooth weighted round-robin order (nginx's): each appears as often
    /// as its weight, spread out. Round robin walks it; least in flight starts its search at
    /// the next entry, so ties go round by weight.
    schedule: Box<[u8]>,
    turn: AtomicUsize,
    /// The `Allow` header of a 405.
    allow: HeaderValue,
    pub metrics: PoolMetrics,
}

impl Pool {
    pub fn new(
        route: &'static RouteSpec,
        resolver: &mut Resolver<'_>,
    ) -> Result<Pool, StartupError> {
        // The routes' checks hold this (a request's tried backends are a 64-bit set).
        assert!(route.targets.len() <= MAX_BALANCE_BACKENDS);
        let nats = |t: &&&TargetSpec| matches!(t.endpoint, spec::Endpoint::Nats(_));
        let backends = route
            .targets
            .iter()
            .filter(|t| !nats(t))
            .map(|target| Backend::new(target, resolver).map(Arc::new))
            .collect::<Result<Box<[_]>, _>>()?;
        let requesters = route
            .targets
            .iter()
            .filter(nats)
            .map(|target| Requester::new(target, resolver).map(Arc::new))
            .collect::<Result<Box<[_]>, _>>()?;
        let weights: Vec<u32> = route.targets.iter().map(|t| t.weight.max(1)).collect();
        let allow = route.balance.methods.names().collect::<Vec<_>>().join(", ");
        Ok(Pool {
            route,
            backends,
            requesters,
            schedule: smooth_schedule(&weights).into(),
            turn: AtomicUsize::new(0),
            allow: HeaderValue::from_str(&allow).expect("method names are header-safe"),
            metrics: PoolMetrics::new(route),
        })
    }

    pub fn backend(&self, index: usize) -> &Arc<Backend> {
        &self.backends[index]
    }

    /// Every backend's name and resolved url, in the routes file's order.
    pub fn backends(&self) -> impl Iterator<Item = (&'static str, &hyper::Uri)> {
        self.backends.iter().map(|b| (b.spec.name, &b.endpoint.uri))
    }

    /// A backend for a request that has tried those in `tried` (a bit per index), among those
    /// available now, as the route's strategy says; `None` if none is left.
    pub fn pick(&self, tried: u64) -> Option<usize> {
        let now = health::now_ms();
        let open = |i: usize| tried & (1 << i) == 0 && self.backends[i].health.available(now);
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let len = self.schedule.len();
        match self.route.balance.strategy {
            Strategy::RoundRobin => (0..len)
                .map(|k| self.schedule[(turn + k) % len] as usize)
                .find(|&i| open(i)),
            Strategy::LeastInflight => {
                let (n, start) = (self.backends.len(), self.schedule[turn % len] as usize);
                let load = |i: usize| {
                    let backend = &self.backends[i];
                    (
                        backend.metrics.in_flight.get().max(0) as u64,
                        backend.spec.weight.max(1) as u64,
                    )
                };
                let mut best: Option<(usize, (u64, u64))> = None;
                for i in (0..n).map(|k| (start + k) % n).filter(|&i| open(i)) {
                    let (flight, weight) = load(i);
                    // flight / weight < best_flight / best_weight, without division.
                    let better = match best {
                        None => true,
                        Some((_, (bf, bw))) => flight * bw < bf * weight,
                    };
                    if better {
                        best = Some((i, (flight, weight)));
                    }
                }
                best.map(|(i, _)| i)
            }
            Strategy::Random => {
                let weight = |i: usize| self.backends[i].spec.weight.max(1);
                let total: u32 = (0..self.backends.len())
                    .filter(|&i| open(i))
                    .map(weight)
                    .sum();
                if total == 0 {
                    return None;
                }
                let mut point = fastrand::u32(0..total);
                (0..self.backends.len()).filter(|&i| open(i)).find(|&i| {
                    let w = weight(i);
                    let here = point < w;
                    point = point.saturating_sub(w);
                    here
                })
            }
        }
    }

    /// Whether the route's backends are NATS subjects.
    pub fn is_nats(&self) -> bool {
        !self.requesters.is_empty()
    }

    /// Calls `visit` with each NATS backend whose client is not connected now.
    pub fn disconnected(&self, visit: &mut dyn FnMut(&'static TargetSpec)) {
        for requester in self.requesters.iter() {
            if !requester.endpoint.connected() {
                visit(requester.spec);
            }
        }
    }

    /// The NATS backend whose turn it is, by weight, passing over those not connected (to
    /// which nothing was sent); the one whose turn it is if none is.
    fn next_requester(&self) -> &Requester {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let len = self.schedule.len();
        let at = |k: usize| &self.requesters[self.schedule[(turn + k) % len] as usize];
        (0..len)
            .map(at)
            .find(|requester| requester.endpoint.connected())
            .unwrap_or_else(|| at(0))
    }

    /// Starts the active health checks of every backend, if the route has `health:`, and
    /// the clients of NATS backends (which connect in the background).
    pub fn start_checks(&self, tasks: &mut JoinSet<()>) {
        for requester in self.requesters.iter() {
            let requester = requester.clone();
            tasks.spawn(async move { requester.endpoint.start().await });
        }
        if let Some(check) = self.route.balance.health {
            for backend in self.backends.iter() {
                tasks.spawn(checks::run(backend.clone(), check));
            }
        }
    }

    /// Sets the gauges read at scrape time.
    pub fn refresh_gauges(&self) {
        let now = health::now_ms();
        for backend in self.backends.iter() {
            let healthy = backend.health.available(now);
            backend.metrics.healthy.set(i64::from(healthy));
        }
        for requester in self.requesters.iter() {
            let connected = requester.endpoint.connected();
            requester.metrics.healthy.set(i64::from(connected));
            requester.endpoint.refresh_gauge();
        }
    }

    pub fn register(&self, registry: &Registry) {
        self.metrics.register(registry);
        for backend in self.backends.iter() {
            backend.metrics.register(registry);
        }
        for requester in self.requesters.iter() {
            requester.metrics.register(registry);
            requester.endpoint.register(registry);
        }
    }
}

/// nginx's smooth weighted round robin, unrolled once over the sum of the weights: each
/// index appears `weight` times, never bunched (weights 5, 1, 1 give 0 0 1 0 2 0 0).
fn smooth_schedule(weights: &[u32]) -> Vec<u8> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        let best = (0..weights.len())
            .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
            .expect("a balance route has a backend");
        current[best] -= total;
        schedule.push(best as u8);
    }
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spreads_each_backend_by_its_weight() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[2, 1]), [0, 1, 0]);
        assert_eq!(smooth_schedule(&[1, 1, 1]), [0, 1, 2]);
    }
}
