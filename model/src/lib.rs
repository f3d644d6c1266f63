//! The routes.yaml language of fanout, shared by the build script, the `routes!` macro and the
//! server.
//!
//! A proc-macro crate can only export macros, so everything the compile-time consumers need
//! lives here: reading and validating a routes file into a resolved [`Routes`] model (with every
//! default applied), and expanding that model into Rust. The server needs only the shapes of
//! what is compiled in ([`spec`]) and the names both sides agree on ([`contract`]); with default
//! features off (`compile` off) the crate is just those, with no dependency.
//!
//! # Layout
//! - [`spec`]: the compiled routes as plain data, each struct defined once (its expansion is
//!   derived from its definition).
//! - [`contract`]: reserved paths and headers, the `${NAME}` syntax, the body size limit.
//! - [`units`]: durations (`250ms`) and sizes (`64KiB`).
//! - `raw`: the serde schema, field for field as users write it.
//! - `locate`: line and column of every YAML node, for error messages.
//! - `resolve`: raw schema to spec, applying defaults and collecting every problem as a
//!   [`ConfigError`]: sections, routes and targets, policies, uniqueness.
//! - [`model`]: the resolved routes: specs plus the Rust identifiers they become.
//! - [`ident`]: route and target names as Rust identifiers.
//! - `emit`, [`expand`]: spec values and the whole model as Rust tokens (and a formatted file
//!   for people to read).

pub mod contract;
pub mod spec;

#[cfg(feature = "compile")]
mod compile {
    pub use crate::error::{ConfigError, ConfigErrors};
    pub use crate::model::{Route, Routes, Target};

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
    /// Never panics: every problem in the input, however malformed, comes back as an error,
    /// and all problems that can be found together are reported together.
    pub fn parse(file: &str, text: &str) -> Result<Routes, ConfigErrors> {
        crate::resolve::resolve(file, text).map_err(ConfigErrors)
    }
}

#[cfg(feature = "compile")]
pub use compile::*;

#[cfg(feature = "compile")]
mod emit;
#[cfg(feature = "compile")]
mod error;
#[cfg(feature = "compile")]
pub mod expand;
#[cfg(feature = "compile")]
pub mod ident;
#[cfg(feature = "compile")]
mod locate;
#[cfg(feature = "compile")]
pub mod model;
#[cfg(feature = "compile")]
mod raw;
#[cfg(feature = "compile")]
mod resolve;
#[cfg(feature = "compile")]
pub mod units;
