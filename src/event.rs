//! An accepted event: its id, body and content type, shared by every lane of its route.
//!
//! Cloning an [`Event`] copies a pointer: the body is stored once however many targets it goes
//! to.

use bytes::Bytes;
use hyper::header::HeaderValue;
use std::sync::Arc;
use std::time::Instant;
use uuid::timestamp::context::ContextV7;
use uuid::{Timestamp, Uuid};

thread_local! {
    /// Orders the ids a thread makes within a millisecond. uuid's own `now_v7` shares one
    /// context behind a process-wide lock, which every request would queue on; ids stay
    /// time-ordered to the millisecond across threads.
    static ID_CONTEXT: ContextV7 = const { ContextV7::new() };
}

#[derive(Clone, Debug)]
pub struct Event(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// `{"id":"<uuid>"}`, the 202 response body.
    receipt: Bytes,
    id: HeaderValue,
    body: Bytes,
    content_type: Option<HeaderValue>,
    accepted_at: Instant,
}

const RECEIPT_PREFIX: &[u8] = b"{\"id\":\"";
const RECEIPT_SUFFIX: &[u8] = b"\"}";

impl Event {
    /// A new event with a fresh time-ordered (v7) UUID.
    pub fn new(body: Bytes, content_type: Option<HeaderValue>) -> Event {
        let uuid = ID_CONTEXT.with(|context| Uuid::new_v7(Timestamp::now(context)));
        let mut receipt = [0u8; RECEIPT_PREFIX.len() + 36 + RECEIPT_SUFFIX.len()];
        let id_range = RECEIPT_PREFIX.len()..RECEIPT_PREFIX.len() + 36;
        receipt[..id_range.start].copy_from_slice(RECEIPT_PREFIX);
        uuid.hyphenated()
            .encode_lower(&mut receipt[id_range.clone()]);
        receipt[id_range.end..].copy_from_slice(RECEIPT_SUFFIX);
        let id = HeaderValue::from_bytes(&receipt[id_range])
            .expect("a hyphenated UUID is a valid header value");
        let receipt = Bytes::copy_from_slice(&receipt);
        Event(Arc::new(Inner {
            receipt,
            id,
            body,
            content_type,
            accepted_at: Instant::now(),
        }))
    }

    /// The event id, as sent in `fanout-event-id`.
    pub fn id(&self) -> &HeaderValue {
        &self.0.id
    }

    /// `{"id":"<uuid>"}`: the body of the 202 that accepted the event.
    pub fn receipt(&self) -> Bytes {
        self.0.receipt.clone()
    }

    pub fn body(&self) -> &Bytes {
        &self.0.body
    }

    /// The `Content-Type` the client sent, forwarded to every target.
    pub fn content_type(&self) -> Option<&HeaderValue> {
        self.0.content_type.as_ref()
    }

    pub fn accepted_at(&self) -> Instant {
        self.0.accepted_at
    }
}
