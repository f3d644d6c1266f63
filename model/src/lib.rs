//! The routes.yaml language of fanout, shared by the build script and the `routes!` macro.
//!
//! A proc-macro crate can only export macros, so everything both compile-time consumers need
//! lives here: reading and validating a routes file into a resolved [`Routes`] model (with every
//! default applied), and expanding that model into Rust.
//!
//! # Layout
//! - [`units`]: durations (`250ms`) and sizes (`64KiB`).
//! - `raw`: the serde schema, field for field as users write it.
//! - `locate`: line and column of every YAML node, for error messages.
//! - [`model`]: the resolved routes, every default applied.
//! - `resolve`: raw schema to model, collecting every problem as a [`ConfigError`].
//! - [`ident`]: route and target names as Rust identifiers.
//! - [`expand`]: model to Rust tokens (and to a formatted file for people to read).

mod error;
pub mod expand;
pub mod ident;
mod locate;
pub mod model;
mod raw;
mod resolve;
pub mod units;

pub use error::{ConfigError, ConfigErrors};
pub use model::{Batch, Breaker, Overflow, Retry, Route, Routes, Server, Target};

use std::path::Path;

/// Reads, parses and validates the routes file at `path`.
///
/// Errors name the file as it was given, so pass the path a person would recognise.
pub fn load(path: &Path) -> Result<Routes, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError::whole_file(
            &file,
            format!("cannot read the routes file: {e}"),
        )])
    })?;
    parse(&file, &text)
}

/// Parses and validates routes from `text`; `file` is only used in error messages.
///
/// Never panics: every problem in the input, however malformed, comes back as an error, and all
/// problems that can be found together are reported together.
pub fn parse(file: &str, text: &str) -> Result<Routes, ConfigErrors> {
    resolve::resolve(file, text).map_err(ConfigErrors)
}
