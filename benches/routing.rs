//! Routing and dispatch of one event: the generated `Route::find` `match` plus the
//! unrolled mode function (`fanout`), against the obvious run-time router, a
//! `HashMap<String, Vec<Sender<Event>>>` of bounded crossbeam channels built from the same
//! routes file parsed with serde_yaml at start-up.
//!
//! - `dispatch/{compiled,hashmap}/{1,4,16}`: look the path up, hand a clone of the event to
//!   each of the route's 1, 4 or 16 queues, then take it back out of each so the queues stay
//!   at steady state. Taking it back is part of the time on both sides, done the same way: a
//!   loop over the route's queues, listed once at setup.
//! - `unknown_path/{compiled,hashmap}/...`: look up a path that is no route: one as long as a
//!   route, one sharing a route's prefix and length, one longer than every route.
//!
//! The routes are `benches/routes/routing.yaml`: every lane drop_oldest with room for 1024
//! events, and a few extra routes so the match has neighbours to tell apart.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use crossbeam_channel::{Receiver, Sender};
use fanout::event::Event;
use fanout::fan_out::lane::Lane;
use fanout::sink::Resolver;
use fanout::table::RouteTable;
use futures_util::FutureExt;
use hyper::header::{HeaderMap, HeaderValue};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod table {
    fanout::routes!("benches/routes/routing.yaml");
}
use table::{Route, Table};

/// The same file as the `routes!` call above, for the run-time router to read.
const ROUTES_FILE: &str = "benches/routes/routing.yaml";

/// The measured routes, by number of targets.
const ROUTES: [(&str, usize); 3] = [("/one", 1), ("/four", 4), ("/sixteen", 16)];

/// Paths that are no route, by how close they come to one.
const UNKNOWN_PATHS: [(&str, &str); 3] = [
    ("same_length", "/onc"),
    ("shared_prefix", "/sixteen/v3"),
    ("long", "/events/2024/11/ingest/v1"),
];

/// What a router built at run time holds: each path's senders, and (for the benchmark only)
/// the matching receivers, to take events back out.
struct RuntimeRouter {
    senders: HashMap<String, Vec<Sender<Event>>>,
    receivers: HashMap<String, Vec<Receiver<Event>>>,
}

impl RuntimeRouter {
    /// Parses the routes file at run time, as a router without a compile step would: one
    /// bounded channel per target, sized by the target's `buffer` or the default one.
    fn load(path: &Path) -> RuntimeRouter {
        let text = std::fs::read_to_string(path).expect("the routes file sits beside the bench");
        let file: serde_yaml::Value =
            serde_yaml::from_str(&text).expect("routes! accepted this file, so it is YAML");
        let default_buffer = file["defaults"]["buffer"].as_u64();
        let mut senders = HashMap::new();
        let mut receivers = HashMap::new();
        let routes = file["routes"].as_sequence().expect("routes is a list");
        for route in routes {
            let path = route["path"].as_str().expect("every route has a path");
            let targets = route["targets"].as_sequence().expect("targets is a list");
            let (route_senders, route_receivers) = targets
                .iter()
                .map(|target| {
                    let buffer = target["buffer"]
                        .as_u64()
                        .or(default_buffer)
                        .expect("the bench file sets a buffer for every target");
                    crossbeam_channel::bounded(buffer as usize)
                })
                .unzip();
            senders.insert(path.to_owned(), route_senders);
            receivers.insert(path.to_owned(), route_receivers);
        }
        RuntimeRouter { senders, receivers }
    }
}

fn event() -> Event {
    Event::new(
        &[b'x'; 200],
        Some(&HeaderValue::from_static("application/json")),
    )
}

fn dispatch(c: &mut Criterion) {
    let table = Table::new(&mut Resolver::new(&|_| None)).expect("the bench routes resolve");
    let runtime = RuntimeRouter::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(ROUTES_FILE));
    let event = event();
    let headers = HeaderMap::new();

    let mut group = c.benchmark_group("dispatch");
    for (path, targets) in ROUTES {
        let route = Route::find(path, &headers).expect("a route of the bench file");
        let mut route_lanes: Vec<Arc<Lane>> = Vec::new();
        table.lanes_of(route, &mut |lane| route_lanes.push(lane.clone()));
        assert_eq!(route_lanes.len(), targets);
        group.bench_with_input(BenchmarkId::new("compiled", targets), &path, |b, &path| {
            b.iter(|| {
                let route =
                    Route::find(black_box(path), &headers).expect("a route of the bench file");
                let admission = table
                    .accept(route, event.clone())
                    .expect("drop_oldest lanes never reject");
                assert!(matches!(
                    admission,
                    fanout::fan_out::lane::Admission::Queued
                ));
                for lane in &route_lanes {
                    let (event, held) = lane.try_take().expect("dispatch pushed one event here");
                    let settled = held
                        .settle(fanout::fan_out::lane::Settled::Delivered)
                        .now_or_never();
                    settled.expect("a memory lane settles at once");
                    black_box(event);
                }
            })
        });

        let receivers = &runtime.receivers[path];
        assert_eq!(receivers.len(), targets);
        group.bench_with_input(BenchmarkId::new("hashmap", targets), &path, |b, &path| {
            b.iter(|| {
                let senders = runtime
                    .senders
                    .get(black_box(path))
                    .expect("a route of the bench file");
                for sender in senders {
                    sender
                        .try_send(event.clone())
                        .expect("emptied every iteration, so never full");
                }
                for receiver in receivers {
                    black_box(receiver.try_recv().expect("one event was sent here"));
                }
            })
        });
    }
    group.finish();
}

fn unknown_path(c: &mut Criterion) {
    let runtime = RuntimeRouter::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(ROUTES_FILE));

    let headers = HeaderMap::new();
    let mut group = c.benchmark_group("unknown_path");
    for (kind, path) in UNKNOWN_PATHS {
        assert!(Route::find(path, &headers).is_none() && !runtime.senders.contains_key(path));
        group.bench_with_input(BenchmarkId::new("compiled", kind), &path, |b, &path| {
            b.iter(|| Route::find(black_box(path), &headers))
        });
        group.bench_with_input(BenchmarkId::new("hashmap", kind), &path, |b, &path| {
            b.iter(|| runtime.senders.get(black_box(path)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = dispatch, unknown_path
}
criterion_main!(benches);
