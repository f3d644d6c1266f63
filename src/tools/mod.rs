//! The data directory's command-line tools: `fanout dead-letters list|replay|purge`
//! (`dead_letters.rs`) and `fanout log verify`. They read the compiled routes to know which
//! lanes and logs there are.

mod dead_letters;

use std::path::Path;
use std::time::SystemTime;

use crate::dead_letter;
use crate::log::{route_dir, scan};
use crate::routes::Route;
use crate::spec::{Storage, TargetSpec};
use crate::startup::StartupError;

pub use dead_letters::dead_letters;

/// Every lane of the compiled routes.
fn targets() -> impl Iterator<Item = &'static TargetSpec> {
    Route::ALL
        .iter()
        .flat_map(|route| route.spec().targets.iter().copied())
}

/// `fanout log verify`: what each durable route's log holds, changing nothing. Exits 1 if a
/// log is damaged (a torn record at the very end of a log is not damage: a crash mid-write,
/// or a write under way while a running server is checked).
pub fn verify(data_dir: &Path) -> Result<(), StartupError> {
    let mut damaged = false;
    for route in Route::ALL {
        let spec = route.spec();
        if spec.storage != Storage::Disk {
            continue;
        }
        let dir = route_dir(data_dir, spec.name);
        if !dir.exists() {
            println!("route {}: no log yet in {}", spec.name, dir.display());
            continue;
        }
        let names: Vec<&str> = spec.targets.iter().map(|t| t.name).collect();
        let found = scan(&dir, &names, false)
            .map_err(|e| StartupError(format!("{}: {e}", dir.display())))?;
        println!(
            "route {}: {} segments, {} bytes, {} records",
            spec.name,
            found.segments.len(),
            found.bytes,
            found.tail.records
        );
        for (index, target) in spec.targets.iter().enumerate() {
            let oldest = found.oldest[index]
                .and_then(|at| SystemTime::now().duration_since(at).ok())
                .map_or("-".to_owned(), |age| format!("{}s", age.as_secs()));
            println!(
                "  target {}: pending={} oldest_age={oldest} position={}",
                target.name,
                found.pending(index),
                found.starts[index].position
            );
        }
        for (segment, offset, bytes) in &found.damaged {
            if found.torn_tail_only {
                println!("  torn tail: segment {segment} from offset {offset}: {bytes} bytes of a record not whole (a crash mid-write, or a write under way; never acknowledged, cut at the next start)");
            } else {
                damaged = true;
                println!(
                    "  corrupt: segment {segment} from offset {offset}: {bytes} bytes unreadable"
                );
            }
        }
    }
    for spec in targets() {
        match dead_letters_held(data_dir, spec) {
            Ok((_, 0)) => {}
            Ok((count, 1)) => println!("dead letters {}/{}: {count}", spec.route, spec.name),
            Ok((count, files)) => println!(
                "dead letters {}/{}: {count} in {files} files",
                spec.route, spec.name
            ),
            // Reported, not fatal: the logs are what this checks.
            Err(error) => println!("dead letters {}/{}: {error}", spec.route, spec.name),
        }
    }
    if damaged {
        std::process::exit(1);
    }
    Ok(())
}

/// How many dead letters a lane holds, and in how many files.
fn dead_letters_held(data_dir: &Path, spec: &TargetSpec) -> Result<(usize, usize), String> {
    let dir = dead_letter::dir(data_dir, spec.route);
    let files = dead_letter::files(&dir, spec.name)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut count = 0;
    for path in &files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        count += text.lines().filter(|l| !l.trim().is_empty()).count();
    }
    Ok((count, files.len()))
}
