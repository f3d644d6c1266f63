//! Finds the routes file, checks it, and tells cargo when to rebuild.
//!
//! The file is `routes.yaml` beside this script, or the absolute path in `FANOUT_ROUTES`. A bad
//! file stops the build here with every problem listed (file:line:col, route, target, field),
//! before anything else compiles against it. A good one is passed to the `routes!` macro in
//! `FANOUT_ROUTES_FILE`, and its expansion is written, formatted, to
//! `$OUT_DIR/routes.generated.rs` for people to read.

use std::path::PathBuf;
use std::{env, fs, process};

fn main() {
    println!("cargo:rerun-if-env-changed=FANOUT_ROUTES");
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let path = match env::var_os("FANOUT_ROUTES") {
        Some(chosen) if !chosen.is_empty() => {
            let chosen = PathBuf::from(chosen);
            if !chosen.is_absolute() {
                eprintln!(
                    "error: FANOUT_ROUTES must be an absolute path, got \"{}\"",
                    chosen.display()
                );
                process::exit(1);
            }
            chosen
        }
        _ => manifest_dir.join("routes.yaml"),
    };
    println!("cargo:rerun-if-changed={}", path.display());

    let routes = match fanout_model::load(&path) {
        Ok(routes) => routes,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "error: {} problem(s) in {}; fix them and build again",
                errors.0.len(),
                path.display()
            );
            process::exit(1);
        }
    };
    println!("cargo:rustc-env=FANOUT_ROUTES_FILE={}", path.display());

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // The header names the file as the reader knows it: relative to the workspace, or by its
    // name alone when it lives elsewhere (no absolute path of the machine that built it).
    let source = match path.strip_prefix(&manifest_dir) {
        Ok(relative) => relative.display().to_string(),
        Err(_) => path.file_name().map_or_else(
            || path.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        ),
    };
    let generated = fanout_model::expand::file(&routes, &source);
    let out = out_dir.join("routes.generated.rs");
    if fs::read_to_string(&out).ok().as_deref() != Some(generated.as_str()) {
        fs::write(&out, generated).expect("OUT_DIR is writable");
    }
}
