//! Which requests a route takes: its path (exact, or a prefix ending in `/*`), its
//! `match: { headers }`, and the rule that no two routes want the same request unless their
//! matches say which one gets it.

use super::targets::is_header_name;
use super::Checker;
use crate::contract::RESERVED_PATHS;
use crate::model::Route;
use crate::raw;

impl Checker<'_> {
    /// Checks a route's path: exact, or a prefix route's ending in `/*`.
    pub(super) fn check_path(&mut self, base: &str, context: &str, path: &str) {
        let (pattern, prefix) = match path.strip_suffix("/*") {
            Some(pattern) => (pattern, true),
            None => (path, false),
        };
        let taken: Vec<&str> = RESERVED_PATHS
            .iter()
            .copied()
            .filter(|reserved| prefix && covers(pattern, reserved))
            .collect();
        let message = if !path.starts_with('/') {
            format!("\"{path}\" must start with '/'")
        } else if pattern.contains('*') {
            format!(
                "\"{path}\" has a '*' inside: only a final /* is allowed (a prefix route, which \
                 takes its path and every path below it)"
            )
        } else if RESERVED_PATHS.contains(&path) {
            format!("\"{path}\" is reserved for the proxy's own endpoint")
        } else if !taken.is_empty() {
            let (s, endpoints) = match taken.len() {
                1 => ("", taken.concat()),
                _ => ("s", taken.join(" and ")),
            };
            format!("\"{path}\" would take the proxy's own endpoint{s} {endpoints}")
        } else if prefix && pattern.ends_with('/') {
            let trimmed = pattern.trim_end_matches('/');
            format!("\"{path}\" ends in an empty segment: write \"{trimmed}/*\"")
        } else if path.contains(['?', '#']) {
            format!("\"{path}\" must not contain '?' or '#': routes match the path alone")
        } else if !path.bytes().all(|b| b.is_ascii_graphic()) {
            format!("\"{path}\" must be printable ASCII without spaces (percent-encode the rest)")
        } else {
            return;
        };
        self.report_field(base, context, "path", message);
    }

    /// The checked `match.headers` of the route at `base`: names lowercase, sorted by name.
    pub(super) fn match_headers(
        &mut self,
        base: &str,
        context: &str,
        raw: &raw::Match,
    ) -> Vec<(String, String)> {
        const FIELD: &str = "match.headers";
        if raw.headers.is_empty() {
            let message = "name at least one header, or leave out `match:`".into();
            self.report_field(base, context, FIELD, message);
        }
        let mut matches: Vec<(String, String)> = Vec::new();
        for (name, value) in self.header_pairs(base, context, FIELD, &raw.headers) {
            let lowercase = name.to_ascii_lowercase();
            let problem = if !is_header_name(&name) {
                Some(format!("\"{name}\" is not a valid header name"))
            } else if matches.iter().any(|(seen, _)| *seen == lowercase) {
                Some(format!(
                    "\"{name}\" is named twice (header names are case-insensitive)"
                ))
            } else if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
                Some("must be printable ASCII on one line".into())
            } else if value.trim() != value {
                Some("must not start or end with a space: header values arrive trimmed".into())
            } else if value.contains("${") {
                Some("is compared as written, at compile time: it cannot hold a ${NAME}".into())
            } else {
                None
            };
            match problem {
                Some(message) => {
                    self.report_field(base, context, &format!("{FIELD}.{name}"), message)
                }
                None => matches.push((lowercase, value)),
            }
        }
        matches.sort();
        matches
    }

    /// Reports every pair of routes that want the same request, at the later route's path.
    ///
    /// Two routes overlap when both have exact paths and they are equal, or both are prefix
    /// routes and one prefix covers the other segment by segment (`/a/*` covers `/a/*` and
    /// `/a/b/*` but not `/ab/*`; `/*` covers every prefix). An exact path and a prefix route
    /// that covers it do not overlap: the exact path wins.
    ///
    /// Overlapping routes are allowed when `match:` tells them apart: both have one and some
    /// header is named in both with different values, or only one has one (it is tried first;
    /// the other takes what it does not match). So for any request at most one route of each
    /// tier matches, and the first tier that has one takes it: exact routes with `match`,
    /// the exact route without, prefix routes with `match`, the prefix route without.
    pub(super) fn check_overlapping_routes(&mut self, routes: &[(usize, Route)]) {
        for (later, (index, route)) in routes.iter().enumerate() {
            for (_, earlier) in &routes[..later] {
                let (first, second) = (earlier.spec, route.spec);
                if !paths_overlap(first.path_pattern(), second.path_pattern())
                    || told_apart(first.match_headers, second.match_headers)
                {
                    continue;
                }
                let hint = if first.match_headers.is_empty() {
                    "give one of them a match: { headers } that tells them apart"
                } else {
                    "their match: { headers } must name a header in both, with different values"
                };
                let message = if first.path == second.path {
                    format!(
                        "route \"{}\" has the path \"{}\" too: {hint}",
                        first.name, first.path
                    )
                } else {
                    format!(
                        "\"{}\" overlaps route \"{}\" (\"{}\"): {hint}",
                        second.path, first.name, first.path
                    )
                };
                let context = format!("route \"{}\"", second.name);
                self.report_field(&format!("routes[{index}]"), &context, "path", message);
            }
        }
    }
}

/// Whether the prefix `prefix` (a prefix route's path without its `/*`) takes `path`: the
/// same path, or one below it segment by segment.
fn covers(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether two path patterns (as [`crate::spec::RouteSpec::path_pattern`] gives them) can
/// take the same request with neither winning by the path alone.
fn paths_overlap((a, a_prefix): (&str, bool), (b, b_prefix): (&str, bool)) -> bool {
    match (a_prefix, b_prefix) {
        (false, false) => a == b,
        (true, true) => covers(a, b) || covers(b, a),
        // An exact path wins over a prefix route that covers it.
        _ => false,
    }
}

/// Whether two routes' `match.headers` say which of them a request takes.
fn told_apart(a: &[(&str, &str)], b: &[(&str, &str)]) -> bool {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => false,
        (false, false) => a
            .iter()
            .any(|(name, value)| b.iter().any(|(other, v)| other == name && v != value)),
        // The one with a match is tried first; the other takes the rest.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_whole_segments() {
        assert!(covers("/a", "/a"));
        assert!(covers("/a", "/a/b"));
        assert!(!covers("/a", "/ab"));
        assert!(!covers("/a/b", "/a"));
        assert!(covers("", "/anything"));
        assert!(covers("", ""));
    }

    #[test]
    fn an_exact_path_shadows_a_prefix_route_that_covers_it() {
        assert!(!paths_overlap(("/a", false), ("/a", true)));
        assert!(!paths_overlap(("/a/b", false), ("", true)));
        assert!(paths_overlap(("/a", false), ("/a", false)));
        assert!(!paths_overlap(("/a", false), ("/b", false)));
    }

    #[test]
    fn nested_prefixes_overlap_and_sibling_ones_do_not() {
        assert!(paths_overlap(("/a", true), ("/a/b", true)));
        assert!(paths_overlap(("/a/b", true), ("/a", true)));
        assert!(paths_overlap(("/a", true), ("/a", true)));
        assert!(paths_overlap(("", true), ("/z", true)));
        assert!(!paths_overlap(("/a", true), ("/ab", true)));
        assert!(!paths_overlap(("/a/b", true), ("/a/c", true)));
    }

    #[test]
    fn matches_tell_routes_apart_by_a_header_they_both_name() {
        let echo = [("x-action", "echo")];
        let sum = [("x-action", "sum")];
        let tenant = [("x-tenant", "a")];
        assert!(told_apart(&echo, &sum));
        assert!(!told_apart(&echo, &echo));
        // A request may carry both headers.
        assert!(!told_apart(&echo, &tenant));
        assert!(told_apart(&[("x-action", "echo"), ("x-tenant", "a")], &sum));
    }

    #[test]
    fn a_match_on_one_side_only_makes_the_other_the_fallback() {
        assert!(told_apart(&[("x-action", "echo")], &[]));
        assert!(told_apart(&[], &[("x-action", "echo")]));
        assert!(!told_apart(&[], &[]));
    }
}
