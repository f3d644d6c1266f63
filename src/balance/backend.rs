//! One backend of a balance route: its resolved endpoint (the fan-out targets' resolution,
//! `${NAME}` read once), its connections, its health, and its counters; and how a request's
//! path becomes the path the backend is sent.

use hyper::http::uri::PathAndQuery;
use hyper::Uri;

use super::connections::Connections;
use super::health::Health;
use super::metrics::BackendMetrics;
use crate::ops::startup::StartupError;
use crate::sink::{http, Endpoint, Resolver};
use crate::spec::{RouteSpec, TargetSpec};

pub struct Backend {
    pub spec: &'static TargetSpec,
    pub endpoint: http::Endpoint,
    pub connections: Connections,
    pub health: Health,
    pub metrics: BackendMetrics,
    /// The url's path without its trailing `/` (empty for none or `/`).
    base_path: String,
}

impl Backend {
    pub fn new(
        spec: &'static TargetSpec,
        resolver: &mut Resolver<'_>,
    ) -> Result<Backend, StartupError> {
        let Endpoint::Http(endpoint) = Endpoint::resolve(spec, resolver)? else {
            return Err(StartupError(format!(
                "route \"{}\", target \"{}\": a balance route's backends are HTTP",
                spec.route, spec.name
            )));
        };
        let base_path = endpoint.uri.path().trim_end_matches('/').to_owned();
        let connections = Connections::new(
            endpoint.connector.clone(),
            endpoint.uri.clone(),
            endpoint.http.http2,
        );
        Ok(Backend {
            spec,
            connections,
            health: Health::new(spec.delivery.breaker),
            metrics: BackendMetrics::new(spec),
            base_path,
            endpoint,
        })
    }

    /// The path and query the backend is sent for a request to `uri` on `route`
    /// (see [`forwarded_path`]).
    pub fn path_for(&self, route: &RouteSpec, uri: &Uri) -> PathAndQuery {
        forwarded_path(&self.base_path, route.path_pattern(), uri)
    }

    /// The url to send `path` to: origin form for HTTP/1.1 (with `Host` set apart), absolute
    /// for HTTP/2 (its `:authority` and `:scheme`).
    pub fn uri_for(&self, path: PathAndQuery) -> Uri {
        let mut parts = hyper::http::uri::Parts::default();
        if self.endpoint.http.http2 {
            parts.scheme = self.endpoint.uri.scheme().cloned();
            parts.authority = self.endpoint.uri.authority().cloned();
        }
        parts.path_and_query = Some(path);
        Uri::from_parts(parts).expect("a path with, for HTTP/2, the backend's scheme and host")
    }
}

/// The path and query a backend whose url has the path `base` (without its trailing `/`)
/// is sent for a request to `uri` on a route of `pattern` (`(path, prefix)`):
/// - a url without a path (`http://w1:5001`): the request's path and query, unchanged;
/// - a url with a path (`http://w1:5001/v2`): that path in place of the route's path (for a
///   prefix route, in place of its prefix: `/items/*` sends `/items/t1/count?x=1` as
///   `/v2/t1/count?x=1`), the query kept.
fn forwarded_path(base: &str, (pattern, prefix): (&str, bool), uri: &Uri) -> PathAndQuery {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if base.is_empty() {
        return original;
    }
    let rest = match prefix {
        true => uri.path().get(pattern.len()..).unwrap_or(""),
        false => "",
    };
    let mut path = String::with_capacity(base.len() + rest.len() + 64);
    path.push_str(base);
    path.push_str(rest);
    if let Some(query) = uri.query() {
        path.push('?');
        path.push_str(query);
    }
    PathAndQuery::from_maybe_shared(path).unwrap_or(original)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_paths() {
        let path = |base, pattern, uri: &str| {
            forwarded_path(base, pattern, &uri.parse().unwrap()).to_string()
        };
        let items = ("/items", true);
        assert_eq!(
            path("", items, "/items/t1/count?x=1"),
            "/items/t1/count?x=1"
        );
        assert_eq!(
            path("/v2", items, "/items/t1/count?x=1"),
            "/v2/t1/count?x=1"
        );
        assert_eq!(path("/v2", items, "/items"), "/v2");
        assert_eq!(path("/v2", ("/ask", false), "/ask?q=2"), "/v2?q=2");
        assert_eq!(path("", ("/ask", false), "/ask?q=2"), "/ask?q=2");
        assert_eq!(path("/v2", ("", true), "/a/b"), "/v2/a/b");
    }
}
