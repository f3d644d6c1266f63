//! The data directory's command-line tools: `fanout dead-letters list|replay|purge`
//! (`dead_letters.rs`) and `fanout log verify`. They read the compiled routes to know which
//! lanes and logs there are.

mod dead_letters;

use std::path::Path;

use crate::ops::startup::StartupError;
use crate::routes::Route;
use crate::spec::{Storage, TargetSpec};
use crate::storage::dead_letter;
use crate::storage::wal;

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
    let mut durable = Vec::new();
    for route in Route::ALL {
        let spec = route.spec();
        if spec.storage == Storage::Disk {
            durable.push(spec.name);
            damaged |= wal::verify(data_dir, spec).map_err(StartupError)?;
        }
    }
    for dir in wal::unknown_route_dirs(data_dir, &durable) {
        println!(
            "route directory {}: no durable route of this binary has it (kept, not read)",
            dir.display()
        );
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
