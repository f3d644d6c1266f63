//! The resolved routes: what a binary carries once every default is applied and every check
//! has passed — the [`crate::spec`] values, plus the Rust identifiers each name becomes.
//! `expand` turns this into Rust; nothing here is read at run time.

use crate::spec::{RouteSpec, ServerSpec, StatusSet, TargetSpec};

#[derive(Clone, Debug, PartialEq)]
pub struct Routes {
    pub server: ServerSpec,
    pub routes: Vec<Route>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// The route as compiled in; its `targets` are the `spec`s of [`Route::targets`].
    pub spec: &'static RouteSpec,
    /// The name as a snake_case Rust identifier (module and field names).
    pub ident: String,
    /// The name as an UpperCamelCase Rust identifier (enum variant).
    pub variant: String,
    pub targets: Vec<Target>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub spec: &'static TargetSpec,
    /// The name as a snake_case Rust identifier (lane field name).
    pub ident: String,
}

/// The most events one batch may hold: their ids (37 bytes each) travel in one header, which
/// must fit common receivers' limits on one header line (nginx reads a request's header lines
/// into 8 KiB buffers, Node allows 16 KiB for all of them): 200 ids are 7,399 bytes.
pub const MAX_BATCH_EVENTS: u64 = 200;

/// The statuses retried unless `retry.on` says otherwise: 408, 429 and every 5xx but 501.
pub const DEFAULT_RETRY_STATUSES: StatusSet =
    StatusSet(&[(408, 408), (429, 429), (500, 500), (502, 599)]);

/// Makes a value `'static`, as the spec's references need. Only the build script and the macro
/// resolve routes, once per build: what they leak is freed when the process ends a moment later.
pub(crate) fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

/// `leak` for text.
pub(crate) fn leak_str(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// `leak` for a list.
pub(crate) fn leak_slice<T>(items: Vec<T>) -> &'static [T] {
    Box::leak(items.into_boxed_slice())
}

/// Sorted, deduplicated statuses as ranges.
pub(crate) fn status_set(mut statuses: Vec<u16>) -> StatusSet {
    statuses.sort_unstable();
    statuses.dedup();
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for status in statuses {
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == status => *last = status,
            _ => ranges.push((status, status)),
        }
    }
    StatusSet(leak_slice(ranges))
}
