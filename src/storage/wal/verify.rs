//! `fanout log verify` for one durable route: what its log holds, per lane what is pending,
//! and any damage, printed; nothing is changed.

use std::path::Path;
use std::time::SystemTime;

use super::{record, recover, route_dir, DamageKind};
use crate::spec::RouteSpec;

/// Prints what route `spec`'s log in `data_dir` holds; whether it holds damaged records. An
/// error if it cannot be read, or is of a format this build does not know.
pub fn verify(data_dir: &Path, spec: &RouteSpec) -> Result<bool, String> {
    let dir = route_dir(data_dir, spec.name);
    if !dir.exists() {
        println!("route {}: no log yet in {}", spec.name, dir.display());
        return Ok(false);
    }
    let names: Vec<&str> = spec.targets.iter().map(|t| t.name).collect();
    let max_record = spec.max_body as usize + 64 * 1024;
    let found = recover::scan(&dir, &names, max_record, false)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    println!(
        "route {}: format version {}, {} segments, {} bytes, {} records",
        spec.name,
        record::VERSION,
        found.segments.len(),
        found.bytes,
        found.tail.records
    );
    for (index, target) in spec.targets.iter().enumerate() {
        let oldest = found.oldest[index]
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .map_or("-".to_owned(), |age| format!("{}s", age.as_secs()));
        let lost = if found.lost_progress[index] {
            " (saved position unreadable: delivers again from the oldest record)"
        } else {
            ""
        };
        println!(
            "  target {}: pending={} oldest_age={oldest} position={} again={}{lost}",
            target.name,
            found.pending(index),
            found.starts[index].position,
            found.redo[index].len(),
        );
    }
    for damage in &found.damaged {
        let (position, _) = damage.positions();
        let (segment, offset, bytes) = (damage.segment, damage.offset, damage.bytes);
        match damage.kind {
            DamageKind::TornTail => println!("  torn tail: segment {segment} from offset {offset}: {bytes} bytes of a record not whole (a crash mid-write, or a write under way; never acknowledged, cut at the next start)"),
            DamageKind::DamagedTail => println!("  corrupt: segment {segment} from offset {offset} (position {position}): {bytes} bytes unreadable at the end of the log (cut at the next start)"),
            DamageKind::Hole => println!("  corrupt: segment {segment} from offset {offset} (position {position}): {bytes} bytes unreadable (skipped; the records after them are delivered)"),
        }
    }
    if found.sealed_off > 0 {
        println!(
            "  sealed off: {} bytes left by failed writes past the end of their segments (never acknowledged, never read)",
            found.sealed_off
        );
    }
    Ok(found.corrupt_regions() > 0)
}
