//! One record of a durable route's log: an accepted event, framed and checksummed.
//!
//! ```text
//! length: u32 LE   bytes of what follows the checksum
//! crc32:  u32 LE   CRC-32 (IEEE) of those bytes
//! id:     16 bytes the event's UUID v7 (and so its acceptance time)
//! ct_len: u16 LE   length of the content type; 0xFFFF: none was sent
//! ct:     ct_len bytes
//! body:   the rest
//! ```
//!
//! A record is never split between segments. Reading stops at the first record whose frame
//! or checksum is wrong: a torn tail after a crash, or damage.

use crate::event::Event;

/// Length and checksum.
pub const FRAME: usize = 8;
/// Id and content type length.
const FIXED: usize = 16 + 2;
const NO_CONTENT_TYPE: u16 = u16::MAX;

/// The size of `event`'s record, frame included.
pub fn size(event: &Event) -> usize {
    FRAME + FIXED + event.content_type_bytes().map_or(0, <[u8]>::len) + event.body_len()
}

/// Appends `event`'s record to `out`.
pub fn encode(event: &Event, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME]);
    out.extend_from_slice(&event.id_bytes());
    match event.content_type_bytes() {
        Some(content_type) => {
            let length = content_type.len().min(NO_CONTENT_TYPE as usize - 1);
            out.extend_from_slice(&(length as u16).to_le_bytes());
            out.extend_from_slice(&content_type[..length]);
        }
        None => out.extend_from_slice(&NO_CONTENT_TYPE.to_le_bytes()),
    }
    out.extend_from_slice(event.body_slice());
    let payload = &out[start + FRAME..];
    let length = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What the start of `bytes` holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// A whole record of this many bytes, frame included.
    Record(usize),
    /// The start of a record that needs this many bytes in all.
    Partial(usize),
    /// Not a record: a wrong length or checksum.
    Corrupt,
}

/// Looks at the record at the start of `bytes`; `max_len` bounds a credible length.
pub fn read(bytes: &[u8], max_len: usize) -> Read {
    if bytes.len() < FRAME {
        return Read::Partial(FRAME);
    }
    let length = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    if !(FIXED..=max_len).contains(&length) {
        return Read::Corrupt;
    }
    let total = FRAME + length;
    if bytes.len() < total {
        return Read::Partial(total);
    }
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[FRAME..total]) != crc {
        return Read::Corrupt;
    }
    let content_type = u16::from_le_bytes(bytes[FRAME + 16..FRAME + 18].try_into().expect("2"));
    if content_type != NO_CONTENT_TYPE && FIXED + content_type as usize > length {
        return Read::Corrupt;
    }
    Read::Record(total)
}

/// The event of a whole, checked record (see [`read`]).
pub fn decode(record: &[u8]) -> Event {
    let id: [u8; 16] = record[FRAME..FRAME + 16].try_into().expect("16 bytes");
    let length = u16::from_le_bytes(record[FRAME + 16..FRAME + 18].try_into().expect("2"));
    let rest = &record[FRAME + FIXED..];
    let (content_type, body) = if length == NO_CONTENT_TYPE {
        (None, rest)
    } else {
        let (content_type, body) = rest.split_at(length as usize);
        (Some(content_type), body)
    };
    Event::restore(id, body, content_type)
}

/// The id of a whole, checked record, without decoding the rest.
pub fn id(record: &[u8]) -> [u8; 16] {
    record[FRAME..FRAME + 16].try_into().expect("16 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn a_record_decodes_to_the_event_it_was_made_of() {
        let text = HeaderValue::from_static("text/plain");
        for event in [
            Event::new(
                b"{\"a\":1}",
                Some(&HeaderValue::from_static("application/json")),
            ),
            Event::new(b"hello", Some(&text)),
            Event::new(b"", None),
        ] {
            let mut out = vec![1, 2, 3];
            encode(&event, &mut out);
            let record = &out[3..];
            assert_eq!(record.len(), size(&event));
            assert_eq!(read(record, 1 << 20), Read::Record(record.len()));
            let back = decode(record);
            assert_eq!(back.id_bytes(), event.id_bytes());
            assert_eq!(back.body_slice(), event.body_slice());
            assert_eq!(back.content_type(), event.content_type());
            assert_eq!(id(record), event.id_bytes());
        }
    }

    #[test]
    fn a_torn_or_damaged_record_is_not_read() {
        let mut out = Vec::new();
        encode(&Event::new(b"{\"a\":1}", None), &mut out);
        assert_eq!(
            read(&out[..out.len() - 1], 1 << 20),
            Read::Partial(out.len())
        );
        assert_eq!(read(&out[..3], 1 << 20), Read::Partial(FRAME));
        let last = out.len() - 1;
        out[last] ^= 1;
        assert_eq!(read(&out, 1 << 20), Read::Corrupt);
        assert_eq!(
            read(&[0; 16], 1 << 20),
            Read::Corrupt,
            "zeros are not a record"
        );
    }
}
