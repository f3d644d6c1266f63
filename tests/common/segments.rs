//! A durable route's segment files as the tests read them (the format is `src/storage/wal/record.rs`'s:
//! a 16-byte header, then records `length u32 LE, crc32 u32 LE, id 16 bytes, ct_len u16, ct,
//! body`), to find a record to damage or to watch segments roll and go.

use std::path::{Path, PathBuf};

/// Bytes of a segment's header (magic and format version) before its first record.
pub const HEADER: usize = 16;

/// The segment files (`*.seg` only) of `route` in data directory `dir`, by base position.
pub fn files(dir: &Path, route: &str) -> Vec<(u64, PathBuf)> {
    let entries = std::fs::read_dir(dir.join("routes").join(route)).expect("the route's log");
    let mut segments: Vec<(u64, PathBuf)> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let base = name.strip_suffix(".seg")?.parse().ok()?;
            Some((base, path))
        })
        .collect();
    segments.sort();
    segments
}

/// Where each record of a segment file starts, and its size (frame included); the file must
/// be whole.
pub fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    assert_eq!(&bytes[..8], b"FANOUTLG", "a segment starts with its header");
    let mut records = Vec::new();
    let mut offset = HEADER;
    while offset + 8 <= bytes.len() {
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        records.push((offset, 8 + length as usize));
        offset += 8 + length as usize;
    }
    assert_eq!(offset, bytes.len(), "the segment ends with a whole record");
    records
}
