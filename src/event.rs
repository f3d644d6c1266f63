//! An accepted event: its id, body and content type, shared by every lane of its route.
//!
//! A lane may hold a million events, so an event is one allocation: a 24-byte header (a
//! reference count, the body's length and content-type kind, the 16-byte UUID) followed by the
//! body and, unless it is the usual JSON one, the client's `Content-Type`. A 200-byte JSON event
//! takes 224 bytes, one allocator size class; cloning one copies a pointer. The acceptance time
//! is the UUID's (v7 ids carry their millisecond), so it is wall-clock time.
//!
//! What goes on the wire is made from it when needed: the 202's body per request, and per
//! delivery the id header (36 bytes) and a `Bytes` view of the body that shares it.

use bytes::Bytes;
use hyper::header::HeaderValue;
use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{self, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::timestamp::context::ContextV7;
use uuid::{Timestamp, Uuid};

thread_local! {
    /// Orders the ids a thread makes within a millisecond. uuid's own `now_v7` shares one
    /// context behind a process-wide lock, which every request would queue on; ids stay
    /// time-ordered to the millisecond across threads.
    static ID_CONTEXT: ContextV7 = const { ContextV7::new() };
}

static JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Body bytes of every event alive in the process, whatever lanes hold it: what
/// `server.memory_budget` bounds.
static HELD_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Body bytes of every event alive in the process.
pub fn held_bytes() -> usize {
    HELD_BYTES.load(Ordering::Relaxed)
}

/// The longest body an event can hold (30 bits of its header); routes.yaml's `max_body` is
/// checked against it at build time.
pub const MAX_BODY: usize = fanout_model::contract::MAX_BODY_LIMIT as usize;

/// The start of every event's allocation.
#[repr(C)]
struct Header {
    /// Clones alive; the last one to go frees the allocation.
    refs: AtomicU32,
    /// The body's length (low 30 bits) and the content type's kind (top 2 bits).
    meta: u32,
    /// The UUID (v7), big-endian as RFC 9562 writes it.
    id: [u8; 16],
}

const HEADER: usize = std::mem::size_of::<Header>();
const LENGTH_BITS: u32 = 30;
const ABSENT: u32 = 0;
const JSON_KIND: u32 = 1;
/// The content type follows the body: its length (4 bytes, little-endian), then its bytes.
const OTHER_KIND: u32 = 2;

/// An accepted event. Immutable once made; clones share it.
pub struct Event(NonNull<Header>);

// SAFETY: the allocation is never written after `Event::new` returns, except the reference
// count, which is atomic; so sharing and sending it between threads is sound.
unsafe impl Send for Event {}
unsafe impl Sync for Event {}

impl Event {
    /// A new event with a fresh time-ordered (v7) UUID, holding a copy of `body` (so that a
    /// waiting event does not pin the connection buffer it was read from).
    pub fn new(body: &[u8], content_type: Option<&HeaderValue>) -> Event {
        let uuid = ID_CONTEXT.with(|context| Uuid::new_v7(Timestamp::now(context)));
        Event::make(
            *uuid.as_bytes(),
            body,
            content_type.map(HeaderValue::as_bytes),
        )
    }

    /// An event as a durable route's log kept it: its id (and so its acceptance time), body
    /// and content type as accepted.
    pub fn restore(id: [u8; 16], body: &[u8], content_type: Option<&[u8]>) -> Event {
        Event::make(id, body, content_type)
    }

    fn make(id: [u8; 16], body: &[u8], content_type: Option<&[u8]>) -> Event {
        assert!(body.len() <= MAX_BODY, "max_body is checked at build time");
        let (kind, tail) = match content_type {
            None => (ABSENT, &[][..]),
            Some(value) if value == JSON.as_bytes() => (JSON_KIND, &[][..]),
            Some(value) => (OTHER_KIND, value),
        };
        let extra = if kind == OTHER_KIND {
            4 + tail.len()
        } else {
            0
        };
        let layout = layout(body.len() + extra);
        // SAFETY: the layout has a non-zero size (the header), and every byte of it is written
        // below before the event is used.
        unsafe {
            let start = alloc::alloc(layout);
            let Some(header) = NonNull::new(start.cast::<Header>()) else {
                alloc::handle_alloc_error(layout)
            };
            header.as_ptr().write(Header {
                refs: AtomicU32::new(1),
                meta: (kind << LENGTH_BITS) | body.len() as u32,
                id,
            });
            let data = start.add(HEADER);
            std::ptr::copy_nonoverlapping(body.as_ptr(), data, body.len());
            if kind == OTHER_KIND {
                let at = data.add(body.len());
                let length = (tail.len() as u32).to_le_bytes();
                std::ptr::copy_nonoverlapping(length.as_ptr(), at, 4);
                std::ptr::copy_nonoverlapping(tail.as_ptr(), at.add(4), tail.len());
            }
            HELD_BYTES.fetch_add(body.len(), Ordering::Relaxed);
            Event(header)
        }
    }

    /// The id's 16 bytes (UUID v7, big-endian).
    pub fn id_bytes(&self) -> [u8; 16] {
        self.header().id
    }

    /// The `Content-Type` the client sent, as bytes.
    pub fn content_type_bytes(&self) -> Option<&[u8]> {
        match self.kind() {
            JSON_KIND => Some(JSON.as_bytes()),
            OTHER_KIND => Some(&self.data()[self.body_len() + 4..]),
            _ => None,
        }
    }

    /// When the event was accepted (the millisecond of its id), as Unix time.
    pub fn accepted_at(&self) -> SystemTime {
        accepted_at(self.header().id)
    }

    fn header(&self) -> &Header {
        // SAFETY: the allocation lives while any clone does, and this is one.
        unsafe { self.0.as_ref() }
    }

    /// The bytes after the header: the body, then the content type if stored.
    fn data(&self) -> &[u8] {
        // SAFETY: `new` wrote `data_len` bytes after the header, and they never change.
        unsafe {
            let start = self.0.as_ptr().cast::<u8>().add(HEADER);
            std::slice::from_raw_parts(start, self.data_len())
        }
    }

    fn kind(&self) -> u32 {
        self.header().meta >> LENGTH_BITS
    }

    fn data_len(&self) -> usize {
        let body = self.body_len();
        if self.kind() != OTHER_KIND {
            return body;
        }
        // SAFETY: an OTHER_KIND event has the content type's 4-byte length after the body.
        let length = unsafe {
            let at = self.0.as_ptr().cast::<u8>().add(HEADER + body);
            u32::from_le_bytes(at.cast::<[u8; 4]>().read_unaligned())
        };
        body + 4 + length as usize
    }

    /// The body's length in bytes.
    pub fn body_len(&self) -> usize {
        (self.header().meta & ((1 << LENGTH_BITS) - 1)) as usize
    }

    /// The body, borrowed.
    pub fn body_slice(&self) -> &[u8] {
        &self.data()[..self.body_len()]
    }

    /// The body as `Bytes` sharing the event (no copy).
    pub fn body(&self) -> Bytes {
        if self.body_len() == 0 {
            return Bytes::new();
        }
        Bytes::from_owner(Body(self.clone()))
    }

    /// The id as text (`8-4-4-4-12` lowercase hex), written into `buffer`.
    pub fn id_text<'b>(&self, buffer: &'b mut [u8; 36]) -> &'b str {
        Uuid::from_bytes(self.header().id)
            .hyphenated()
            .encode_lower(buffer)
    }

    /// The event id, as sent in `fanout-event-id`.
    pub fn id(&self) -> HeaderValue {
        HeaderValue::from_str(self.id_text(&mut [0; 36])).expect("a UUID is a valid header value")
    }

    /// `{"id":"<uuid>"}`: the body of the 202 that accepted the event.
    pub fn receipt(&self) -> Bytes {
        receipt_of(self.header().id)
    }

    /// The `Content-Type` the client sent, forwarded to every target.
    pub fn content_type(&self) -> Option<HeaderValue> {
        match self.kind() {
            JSON_KIND => Some(JSON.clone()),
            OTHER_KIND => Some(
                HeaderValue::from_bytes(&self.data()[self.body_len() + 4..])
                    .expect("it was a header value when the event was made"),
            ),
            _ => None,
        }
    }

    /// How long ago the event was accepted, to the millisecond of its id.
    pub fn age(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.accepted_at())
            .unwrap_or(Duration::ZERO)
    }
}

/// `{"id":"<uuid>"}` for the event with id `id`.
pub fn receipt_of(id: [u8; 16]) -> Bytes {
    let mut receipt = Vec::with_capacity(45);
    receipt.extend_from_slice(b"{\"id\":\"");
    receipt.extend_from_slice(
        Uuid::from_bytes(id)
            .hyphenated()
            .encode_lower(&mut [0; 36])
            .as_bytes(),
    );
    receipt.extend_from_slice(b"\"}");
    Bytes::from(receipt)
}

/// When the event with id `id` (a UUID v7) was accepted, to the millisecond, as Unix time.
pub fn accepted_at(id: [u8; 16]) -> SystemTime {
    let (seconds, nanos) = Uuid::from_bytes(id)
        .get_timestamp()
        .map_or((0, 0), |timestamp| timestamp.to_unix());
    UNIX_EPOCH + Duration::new(seconds, nanos)
}

fn layout(data_len: usize) -> Layout {
    Layout::from_size_align(HEADER + data_len, std::mem::align_of::<Header>())
        .expect("a body within MAX_BODY makes a valid layout")
}

impl Clone for Event {
    fn clone(&self) -> Event {
        let before = self.header().refs.fetch_add(1, Ordering::Relaxed);
        // As std's Arc does: a count this high means clones are leaked in a loop.
        if before > u32::MAX / 2 {
            std::process::abort();
        }
        Event(self.0)
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if self.header().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // The last clone: see every other clone's use before freeing (as std's Arc does).
        atomic::fence(Ordering::Acquire);
        HELD_BYTES.fetch_sub(self.body_len(), Ordering::Relaxed);
        let layout = layout(self.data_len());
        // SAFETY: this was the last reference, and the layout is the one `new` allocated with.
        unsafe { alloc::dealloc(self.0.as_ptr().cast(), layout) }
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id_text(&mut [0; 36]))
            .field("body_len", &self.body_len())
            .finish()
    }
}

/// An event's body as the owner of a `Bytes`.
struct Body(Event);

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        self.0.body_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_receipt_and_body_come_from_one_event() {
        let event = Event::new(
            b"{\"a\":1}",
            Some(&HeaderValue::from_static("application/json")),
        );
        let id = event.id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id.to_str().unwrap()[14..15], "7", "a v7 UUID");
        assert_eq!(
            event.receipt(),
            format!("{{\"id\":\"{}\"}}", id.to_str().unwrap())
        );
        assert_eq!(event.body(), &b"{\"a\":1}"[..]);
        assert_eq!(event.body_len(), 7);
        assert_eq!(event.content_type(), Some(JSON.clone()));
        assert!(event.age() < Duration::from_secs(1));
        let clone = event.clone();
        drop(event);
        assert_eq!(
            clone.body(),
            &b"{\"a\":1}"[..],
            "a clone outlives the original"
        );
    }

    #[test]
    fn another_content_type_is_kept_as_sent() {
        let text = HeaderValue::from_static("text/plain; charset=utf-8");
        let event = Event::new(b"{\"a\":1}", Some(&text));
        assert_eq!(event.content_type(), Some(text));
        assert_eq!(event.body(), &b"{\"a\":1}"[..]);
        assert_eq!(event.body_len(), 7);
        let empty = Event::new(b"", None);
        assert_eq!(empty.content_type(), None);
        assert_eq!(empty.body(), Bytes::new());
    }

    #[test]
    fn a_body_view_keeps_the_event_alive() {
        let body = Event::new(b"kept", None).body();
        assert_eq!(body, &b"kept"[..]);
    }

    #[test]
    fn a_200_byte_json_event_is_one_allocation_of_224_bytes() {
        // A lane may hold a million events: 224 bytes is one allocator size class.
        assert_eq!(HEADER, 24);
        let event = Event::new(&[b'x'; 200], Some(&JSON));
        assert_eq!(layout(event.data_len()).size(), 224);
    }
}
