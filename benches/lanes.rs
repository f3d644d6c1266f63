//! A lane under contention, per overflow policy, against the lock-free bounded queues one
//! would otherwise reach for: `crossbeam_queue::ArrayQueue` and `crossbeam_channel::bounded`,
//! all of the same capacity.
//!
//! Each measured batch is `BATCH` events offered by `PRODUCERS` threads at once while
//! `CONSUMERS` threads take them out (yielding when the queue is empty), as ingest and
//! delivery workers do; the time is per batch, and the throughput counts events offered.
//! What a producer does with a full queue follows the policy:
//! - `drop_oldest/*`: evict the oldest waiting event to take the new one
//!   (`push_drop_oldest`; `ArrayQueue::force_push`; a channel has no eviction, so the producer
//!   takes one event out through its own receiver and sends again).
//! - `drop_newest/*`: drop the new event (`push_drop_newest`; `push` or `try_send`, the error
//!   ignored).
//! - `reject/*`: refuse it and let the producer retry after a yield, as a client answered 503
//!   does (`reserve()` then `push`; `push` or `try_send` until it succeeds), so every event
//!   arrives.
//!
//! With the drop policies, how many events are dropped depends on how fast the consumers
//! keep up, so it differs between the queues; the time still covers every event offered.

use criterion::measurement::WallTime;
use criterion::{
    black_box, criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput,
};
use crossbeam_channel::{Sender, TrySendError};
use crossbeam_queue::ArrayQueue;
use fanout::event::Event;
use fanout::fan_out::lane::{Lane, Settled};
use fanout::sink::Resolver;
use fanout::table::RouteTable;
use futures_util::FutureExt;
use hyper::header::HeaderValue;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

// The lanes get their `&'static TargetSpec` from a routes file rather than a leaked
// hand-written `TargetSpec`: the file goes through the same checks and defaults as a real
// one, and the bench does not have to spell out every field (and break when one is added).
mod table {
    fanout::routes!("benches/routes/lanes.yaml");
}
use table::Table;

const PRODUCERS: usize = 2;
const CONSUMERS: usize = 1;
/// Events offered per measured batch, split evenly between the producers.
const BATCH: u64 = 10_000;
/// Distinct events each producer cycles through, so the threads do not all bump the
/// reference count of a single event.
const DISTINCT_EVENTS: usize = 1024;

/// The capacity of every queue measured here: that of the bench file's lanes.
fn capacity() -> usize {
    let capacity = table::drop_oldest::TARGET_SINK.lane.buffer;
    assert!(
        capacity == table::drop_newest::TARGET_SINK.lane.buffer
            && capacity == table::reject::TARGET_SINK.lane.buffer,
        "the lanes of benches/routes/lanes.yaml must all be of one size"
    );
    capacity
}

/// Runs `batches` batches through one queue, `push` on the producer threads and `pop` on the
/// consumer threads, and returns the time from the start of the first push until every
/// producer is done and the queue is empty.
fn contended(
    batches: u64,
    push: impl Fn(Event) + Sync,
    pop: impl Fn() -> Option<Event> + Sync,
) -> Duration {
    let per_producer = batches * BATCH / PRODUCERS as u64;
    let producing = AtomicUsize::new(PRODUCERS);
    let start = Barrier::new(PRODUCERS + CONSUMERS + 1);
    let began = thread::scope(|scope| {
        for _ in 0..PRODUCERS {
            scope.spawn(|| {
                let events: Vec<Event> = (0..DISTINCT_EVENTS).map(|_| event()).collect();
                start.wait();
                for event in events.iter().cycle().take(per_producer as usize) {
                    push(event.clone());
                }
                producing.fetch_sub(1, Ordering::Release);
            });
        }
        for _ in 0..CONSUMERS {
            scope.spawn(|| {
                start.wait();
                loop {
                    // Read before popping: once no producer is left, an empty pop means empty
                    // for good.
                    let finished = producing.load(Ordering::Acquire) == 0;
                    match pop() {
                        Some(event) => drop(black_box(event)),
                        None if finished => break,
                        None => thread::yield_now(),
                    }
                }
            });
        }
        start.wait();
        Instant::now()
    });
    began.elapsed()
}

/// The bench file's routes with empty lanes (nothing resolves: the urls hold no `${NAME}`).
fn table() -> Table {
    Table::new(&mut Resolver::new(&|_| None)).expect("the bench routes resolve")
}

/// Takes an event out of `lane` as a delivery worker does, and settles it at once.
fn taken(lane: &Lane) -> Option<Event> {
    lane.try_take().map(|(event, held)| {
        // A memory lane settles at once; a delivery worker awaits it.
        let settled = held.settle(Settled::Delivered).now_or_never();
        settled.expect("a memory lane settles at once");
        event
    })
}

fn event() -> Event {
    Event::new(
        &[b'x'; 200],
        Some(&HeaderValue::from_static("application/json")),
    )
}

fn policy_group<'a>(c: &'a mut Criterion, policy: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(policy);
    group.throughput(Throughput::Elements(BATCH));
    group
}

fn drop_oldest(c: &mut Criterion) {
    let mut group = policy_group(c, "drop_oldest");
    group.bench_function("lane", |b| {
        b.iter_custom(|batches| {
            let lanes = table();
            let lane = &lanes.drop_oldest.lanes.sink;
            contended(
                batches,
                |event| lane.push_drop_oldest(event),
                || taken(lane),
            )
        })
    });
    group.bench_function("array_queue", |b| {
        b.iter_custom(|batches| {
            let queue = ArrayQueue::new(capacity());
            contended(
                batches,
                |event| drop(queue.force_push(event)),
                || queue.pop(),
            )
        })
    });
    group.bench_function("channel", |b| {
        b.iter_custom(|batches| {
            let (sender, receiver) = crossbeam_channel::bounded(capacity());
            contended(
                batches,
                |event| send_until_in(&sender, event, || drop(receiver.try_recv())),
                || receiver.try_recv().ok(),
            )
        })
    });
    group.finish();
}

/// Sends `event` on a bounded channel, calling `when_full` each time it is full, until it
/// goes in.
fn send_until_in<T>(sender: &Sender<T>, mut event: T, mut when_full: impl FnMut()) {
    loop {
        match sender.try_send(event) {
            Ok(()) => return,
            Err(TrySendError::Full(back)) => {
                event = back;
                when_full();
            }
            Err(TrySendError::Disconnected(_)) => {
                unreachable!("the receiver outlives every producer")
            }
        }
    }
}

fn drop_newest(c: &mut Criterion) {
    let mut group = policy_group(c, "drop_newest");
    group.bench_function("lane", |b| {
        b.iter_custom(|batches| {
            let lanes = table();
            let lane = &lanes.drop_newest.lanes.sink;
            contended(
                batches,
                |event| lane.push_drop_newest(event),
                || taken(lane),
            )
        })
    });
    group.bench_function("array_queue", |b| {
        b.iter_custom(|batches| {
            let queue = ArrayQueue::new(capacity());
            contended(batches, |event| drop(queue.push(event)), || queue.pop())
        })
    });
    group.bench_function("channel", |b| {
        b.iter_custom(|batches| {
            let (sender, receiver) = crossbeam_channel::bounded(capacity());
            contended(
                batches,
                |event| drop(sender.try_send(event)),
                || receiver.try_recv().ok(),
            )
        })
    });
    group.finish();
}

fn reject(c: &mut Criterion) {
    let mut group = policy_group(c, "reject");
    group.bench_function("lane", |b| {
        b.iter_custom(|batches| {
            let lanes = table();
            let lane = &lanes.reject.lanes.sink;
            contended(
                batches,
                |event| loop {
                    match lane.reserve(event.body_len()) {
                        Ok(slot) => break slot.push(event),
                        Err(_) => thread::yield_now(),
                    }
                },
                || taken(lane),
            )
        })
    });
    group.bench_function("array_queue", |b| {
        b.iter_custom(|batches| {
            let queue = ArrayQueue::new(capacity());
            contended(
                batches,
                |mut event| {
                    while let Err(back) = queue.push(event) {
                        event = back;
                        thread::yield_now();
                    }
                },
                || queue.pop(),
            )
        })
    });
    group.bench_function("channel", |b| {
        b.iter_custom(|batches| {
            let (sender, receiver) = crossbeam_channel::bounded(capacity());
            contended(
                batches,
                |event| send_until_in(&sender, event, thread::yield_now),
                || receiver.try_recv().ok(),
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = drop_oldest, drop_newest, reject
}
criterion_main!(benches);
