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
//! A record is never split between segments. A record whose frame or checksum is wrong is a
//! torn tail after a crash, or damage; [`resync`] finds the next whole record after damage.
//!
//! Every segment file starts with a [`HEADER`]: the magic `FANOUTLG` and the format version
//! (u32 LE), then 4 bytes of zeros. A reader stops at a version it does not know instead of
//! reading records it might misread.

use crate::event::Event;

/// Length and checksum.
pub const FRAME: usize = 8;
/// Id and content type length.
const FIXED: usize = 16 + 2;
const NO_CONTENT_TYPE: u16 = u16::MAX;

/// Bytes of the header at the start of every segment file.
pub const HEADER: usize = 16;
/// The first 8 bytes of every segment file.
const MAGIC: &[u8; 8] = b"FANOUTLG";
/// The format of segments and records this build writes and reads.
pub const VERSION: u32 = 1;

/// A segment's header.
pub fn header() -> [u8; HEADER] {
    let mut header = [0; HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// What the start of a segment file says of its format.
#[derive(Debug, PartialEq, Eq)]
pub enum Format {
    /// A header of this build's version.
    Current,
    /// Fewer bytes than a header: a segment whose creation did not finish.
    Short,
    /// A fanout segment of another version.
    Version(u32),
    /// Not a fanout segment.
    Foreign,
}

/// Reads the header at the start of `bytes`.
pub fn format(bytes: &[u8]) -> Format {
    if bytes.len() < HEADER {
        return Format::Short;
    }
    if &bytes[..8] != MAGIC {
        return Format::Foreign;
    }
    match u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) {
        VERSION => Format::Current,
        other => Format::Version(other),
    }
}

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

/// The offset of the first whole record in `bytes` after damage at its start, if any: every
/// later offset is tried, so one bad length cannot hide the records after it. A false match
/// needs a credible length and a matching CRC-32 at once.
pub fn resync(bytes: &[u8], max_len: usize) -> Option<usize> {
    (1..bytes.len()).find(|&offset| matches!(read(&bytes[offset..], max_len), Read::Record(_)))
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
    fn after_damage_the_next_whole_record_is_found() {
        let mut out = Vec::new();
        encode(&Event::new(b"{\"a\":1}", None), &mut out);
        let second = out.len();
        encode(&Event::new(b"{\"b\":2}", None), &mut out);
        out[2] ^= 0x40;
        assert_eq!(read(&out, 1 << 20), Read::Corrupt);
        assert_eq!(resync(&out, 1 << 20), Some(second));
        assert_eq!(
            resync(&out[..second], 1 << 20),
            None,
            "nothing whole after it"
        );
    }

    #[test]
    fn a_header_tells_its_version() {
        assert_eq!(format(&header()), Format::Current);
        assert_eq!(format(&header()[..10]), Format::Short);
        let mut other = header();
        other[8] = 9;
        assert_eq!(format(&other), Format::Version(9));
        assert_eq!(format(&[0; HEADER]), Format::Foreign);
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
