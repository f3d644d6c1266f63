//! A `fanout` binary built with another routes file (`FANOUT_ROUTES`), as a user builds one.
//!
//! Builds share `tests/config_errors.rs`'s target directory, so dependencies are compiled
//! once; each binary is copied out of it at once, as the next build overwrites it. A routes
//! file is rewritten only when its text changed, so building the same routes again (another
//! test file sharing them) finds the crate up to date.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds fanout with `routes` (the text of a routes file) written to `<name>/routes.yaml`
/// under the test target directory and the cargo `features` (`&["failpoints"]`), and returns
/// the binary's path and the routes file's.
pub fn fanout_with(
    name: &str,
    routes: &str,
    features: &[&str],
) -> Result<(PathBuf, PathBuf), String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let routes_file = dir.join("routes.yaml");
    if fs::read_to_string(&routes_file).ok().as_deref() != Some(routes) {
        fs::write(&routes_file, routes)
            .map_err(|e| format!("write {}: {e}", routes_file.display()))?;
    }
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("routes-builds");
    let output = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--bin", "fanout"])
        .args(features.iter().flat_map(|feature| ["--features", feature]))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("FANOUT_ROUTES", &routes_file)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_TERM_COLOR", "never")
        .output()
        .map_err(|e| format!("run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "the build with {} failed:\n{}",
            routes_file.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let binary = dir.join(format!("fanout{}", std::env::consts::EXE_SUFFIX));
    let built = target_dir
        .join("debug")
        .join(format!("fanout{}", std::env::consts::EXE_SUFFIX));
    // Copied beside and renamed into place: the binary at `binary` may still be running (a
    // test binary before this one left it, or another test run shares the directory), and a
    // running executable cannot be written over (ETXTBSY), but it can be replaced.
    // The copy's name is this process's and this call's: tests of one binary build at once.
    static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let copy = binary.with_extension(format!("{}.{n}.new", std::process::id()));
    fs::copy(&built, &copy).map_err(|e| format!("copy {}: {e}", built.display()))?;
    fs::rename(&copy, &binary).map_err(|e| format!("rename {}: {e}", copy.display()))?;
    Ok((binary, routes_file))
}
