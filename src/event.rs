//! An accepted event: its id, body and content type, shared by every lane of its route.
//!
//! Cloning an [`Event`] copies a pointer: the body is stored once however many targets it goes
//! to. An event is kept small because a lane may hold a million of them: one buffer holds the
//! 202's body `{"id":"<uuid>"}`, the event's body and (unless it is the usual JSON one) the
//! client's `Content-Type`, and the id header, the 202 body, the body and the content type
//! sent to targets are all slices of it (no allocation per target or response).

use bytes::Bytes;
use hyper::header::HeaderValue;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use uuid::timestamp::context::ContextV7;
use uuid::{Timestamp, Uuid};

thread_local! {
    /// Orders the ids a thread makes within a millisecond. uuid's own `now_v7` shares one
    /// context behind a process-wide lock, which every request would queue on; ids stay
    /// time-ordered to the millisecond across threads.
    static ID_CONTEXT: ContextV7 = const { ContextV7::new() };
}

/// What arrival times are counted from: a `u64` of nanoseconds is half an `Instant`.
static ANCHOR: LazyLock<Instant> = LazyLock::new(Instant::now);

static JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Body bytes of every event alive in the process, whatever lanes hold it: what
/// `server.memory_budget` bounds.
static HELD_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Body bytes of every event alive in the process.
pub fn held_bytes() -> usize {
    HELD_BYTES.load(Ordering::Relaxed)
}

#[derive(Clone, Debug)]
pub struct Event(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// `{"id":"<uuid>"}`, the body, then for [`ContentType::Other`] the content type.
    bytes: Bytes,
    /// Nanoseconds from [`ANCHOR`] to the event's arrival.
    accepted_at: u64,
    content_type: ContentType,
}

/// The client's `Content-Type`. The usual one is not stored; another one ends the buffer.
#[derive(Clone, Copy, Debug)]
enum ContentType {
    Absent,
    Json,
    /// The last `len` bytes of the buffer.
    Other {
        len: u32,
    },
}

const RECEIPT_PREFIX: &[u8] = b"{\"id\":\"";
const RECEIPT_SUFFIX: &[u8] = b"\"}";
const ID: std::ops::Range<usize> = RECEIPT_PREFIX.len()..RECEIPT_PREFIX.len() + 36;
const RECEIPT_LEN: usize = ID.end + RECEIPT_SUFFIX.len();

impl Event {
    /// A new event with a fresh time-ordered (v7) UUID, holding a copy of `body` (so that a
    /// waiting event does not pin the connection buffer it was read from).
    pub fn new(body: &[u8], content_type: Option<&HeaderValue>) -> Event {
        let uuid = ID_CONTEXT.with(|context| Uuid::new_v7(Timestamp::now(context)));
        let (content_type, stored) = match content_type {
            None => (ContentType::Absent, &[][..]),
            Some(value) if value == JSON => (ContentType::Json, &[][..]),
            // Header values are far shorter than 4 GiB: hyper caps a request's head.
            Some(value) => (
                ContentType::Other {
                    len: value.len() as u32,
                },
                value.as_bytes(),
            ),
        };
        let mut bytes = Vec::with_capacity(RECEIPT_LEN + body.len() + stored.len());
        bytes.extend_from_slice(RECEIPT_PREFIX);
        bytes.extend_from_slice(uuid.hyphenated().encode_lower(&mut [0; 36]).as_bytes());
        bytes.extend_from_slice(RECEIPT_SUFFIX);
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(stored);
        HELD_BYTES.fetch_add(body.len(), Ordering::Relaxed);
        Event(Arc::new(Inner {
            bytes: Bytes::from(bytes),
            accepted_at: ANCHOR.elapsed().as_nanos() as u64,
            content_type,
        }))
    }

    /// The event id, as sent in `fanout-event-id`.
    pub fn id(&self) -> HeaderValue {
        HeaderValue::from_maybe_shared(self.0.bytes.slice(ID))
            .expect("a hyphenated UUID is a valid header value")
    }

    /// `{"id":"<uuid>"}`: the body of the 202 that accepted the event.
    pub fn receipt(&self) -> Bytes {
        self.0.bytes.slice(..RECEIPT_LEN)
    }

    pub fn body(&self) -> Bytes {
        self.0.bytes.slice(RECEIPT_LEN..self.body_end())
    }

    /// The body's length in bytes.
    pub fn body_len(&self) -> usize {
        self.body_end() - RECEIPT_LEN
    }

    fn body_end(&self) -> usize {
        self.0.body_end()
    }

    /// The `Content-Type` the client sent, forwarded to every target.
    pub fn content_type(&self) -> Option<HeaderValue> {
        match self.0.content_type {
            ContentType::Absent => None,
            ContentType::Json => Some(JSON.clone()),
            ContentType::Other { .. } => Some(
                HeaderValue::from_maybe_shared(self.0.bytes.slice(self.body_end()..))
                    .expect("it was a header value when the event was made"),
            ),
        }
    }

    pub fn accepted_at(&self) -> Instant {
        *ANCHOR + Duration::from_nanos(self.0.accepted_at)
    }
}

impl Inner {
    fn body_end(&self) -> usize {
        match self.content_type {
            ContentType::Other { len } => self.bytes.len() - len as usize,
            ContentType::Absent | ContentType::Json => self.bytes.len(),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        HELD_BYTES.fetch_sub(self.body_end() - RECEIPT_LEN, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_receipt_and_body_are_views_of_one_event() {
        let event = Event::new(
            b"{\"a\":1}",
            Some(&HeaderValue::from_static("application/json")),
        );
        let id = event.id();
        assert_eq!(id.len(), 36);
        assert_eq!(
            event.receipt(),
            format!("{{\"id\":\"{}\"}}", id.to_str().unwrap())
        );
        assert_eq!(event.body(), &b"{\"a\":1}"[..]);
        assert_eq!(event.body_len(), 7);
        assert_eq!(event.content_type(), Some(JSON.clone()));
        assert!(event.accepted_at() <= Instant::now());
    }

    #[test]
    fn another_content_type_is_kept_as_sent() {
        let text = HeaderValue::from_static("text/plain; charset=utf-8");
        let event = Event::new(b"{\"a\":1}", Some(&text));
        assert_eq!(event.content_type(), Some(text));
        assert_eq!(event.body(), &b"{\"a\":1}"[..]);
        assert_eq!(event.body_len(), 7);
        assert_eq!(Event::new(b"", None).content_type(), None);
    }

    #[test]
    fn an_event_is_one_small_block_besides_its_buffer() {
        // A lane may hold a million events: the shared part stays within 64 bytes.
        assert!(std::mem::size_of::<Inner>() + 2 * std::mem::size_of::<usize>() <= 64);
    }
}
