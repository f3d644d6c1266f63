//! The per-request work of ingest besides routing: giving a 200-byte event its id and 202
//! body, and building the 202 response.
//!
//! - `receipt/event`: `Event::new` + `Event::receipt`, which write the UUID once into a
//!   `{"id":"..."}` buffer followed by a copy of the body (the header value, the 202 body and
//!   the body sent to targets are slices of it), and also allocate the shared event and stamp
//!   its arrival time.
//! - `receipt/naive`: the obvious alternative, `Uuid::now_v7().to_string()` and a `format!` of
//!   the body; it builds neither the header value nor the event, so it does less work.
//! - `response_202/build`: the hyper `Response` of ingest's happy path: status 202,
//!   `Content-Type: application/json`, the receipt as a `Full<Bytes>` body.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fanout::event::Event;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use std::time::Duration;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const BODY: &[u8; 200] = &[b'x'; 200];

fn receipt(c: &mut Criterion) {
    let body = Bytes::from_static(BODY);
    let mut group = c.benchmark_group("receipt");
    group.bench_function("event", |b| {
        b.iter(|| {
            let event = Event::new(black_box(&body[..]), Some(&JSON));
            (event.receipt(), event)
        })
    });
    group.bench_function("naive", |b| {
        b.iter(|| {
            let id = uuid::Uuid::now_v7().to_string();
            format!("{{\"id\":\"{id}\"}}")
        })
    });
    group.finish();
}

/// Ingest's 202, as `ingest::json` builds it.
fn accepted(receipt: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(receipt));
    *response.status_mut() = StatusCode::ACCEPTED;
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response
}

fn response_202(c: &mut Criterion) {
    let event = Event::new(BODY, Some(&JSON));
    let mut group = c.benchmark_group("response_202");
    group.bench_function("build", |b| b.iter(|| accepted(black_box(event.receipt()))));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = receipt, response_202
}
criterion_main!(benches);
