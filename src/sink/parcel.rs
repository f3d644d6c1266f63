//! What one delivery request carries: a single event as it came in, or a batch of events as
//! NDJSON (`Content-Type: application/x-ndjson`, one event per line, in lane order) with their
//! ids, in the same order, in `fanout-event-ids`.
//!
//! A batch line is the event's body with every CR and LF replaced by a space. For JSON that
//! changes nothing (a JSON string cannot hold a raw line break, so line breaks are only ever
//! whitespace between tokens); for other bodies it does, so batching is meant for JSON events.

use bytes::{BufMut, Bytes, BytesMut};
use hyper::header::{HeaderName, HeaderValue};

use fanout_model::contract;

use crate::event::Event;

/// Header carrying the event id to targets.
pub const EVENT_ID: HeaderName = HeaderName::from_static(contract::EVENT_ID);
/// Header carrying the ids of a batch's events, comma-separated, in line order.
pub const EVENT_IDS: HeaderName = HeaderName::from_static(contract::EVENT_IDS);
/// Header carrying the route name to targets.
pub const ROUTE: HeaderName = HeaderName::from_static(contract::ROUTE);
/// Header carrying the attempt number (1 for the first) to targets.
pub const ATTEMPT: HeaderName = HeaderName::from_static(contract::ATTEMPT);

const NDJSON: HeaderValue = HeaderValue::from_static("application/x-ndjson");

pub struct Parcel {
    pub body: Bytes,
    pub content_type: Option<HeaderValue>,
    /// `fanout-event-id` with one id, or `fanout-event-ids` with the batch's ids.
    pub ids: (HeaderName, HeaderValue),
    /// How many events the request carries.
    pub count: u64,
}

impl Parcel {
    /// One event, body and content type as received: sharing the body, copying nothing.
    pub fn single(event: &Event) -> Parcel {
        Parcel {
            body: event.body(),
            content_type: event.content_type(),
            ids: (EVENT_ID, event.id()),
            count: 1,
        }
    }

    /// Several events as one NDJSON body.
    pub fn batch(events: &[Event]) -> Parcel {
        let size: usize = events.iter().map(|e| e.body_len() + 1).sum();
        let mut body = BytesMut::with_capacity(size);
        let mut ids = BytesMut::with_capacity(events.len() * 37);
        for event in events {
            let start = body.len();
            body.put_slice(event.body_slice());
            for byte in &mut body[start..] {
                if *byte == b'\n' || *byte == b'\r' {
                    *byte = b' ';
                }
            }
            body.put_u8(b'\n');
            if !ids.is_empty() {
                ids.put_u8(b',');
            }
            ids.put_slice(event.id_text(&mut [0; 36]).as_bytes());
        }
        Parcel {
            body: body.freeze(),
            content_type: Some(NDJSON),
            ids: (
                EVENT_IDS,
                HeaderValue::from_maybe_shared(ids.freeze())
                    .expect("UUIDs and commas make a valid header value"),
            ),
            count: events.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_one_line_per_event_with_the_ids_in_order() {
        let events = [
            Event::new(b"{\"a\":1}", None),
            Event::new(b"{\n  \"b\": 2\r\n}", None),
        ];
        let parcel = Parcel::batch(&events);
        assert_eq!(&parcel.body[..], b"{\"a\":1}\n{   \"b\": 2  }\n");
        assert_eq!(parcel.count, 2);
        assert_eq!(parcel.ids.0, EVENT_IDS);
        let ids = format!(
            "{},{}",
            events[0].id().to_str().unwrap(),
            events[1].id().to_str().unwrap()
        );
        assert_eq!(parcel.ids.1, ids.as_str());
        assert_eq!(
            &events[1].body()[..],
            b"{\n  \"b\": 2\r\n}",
            "the event itself is untouched"
        );
    }
}
