//! The route lookup every request on the ingest listener goes through: a balance route's
//! request is relayed (`crate::balance`), a fan-out route's becomes an event
//! (`crate::fanout::ingest`), and a path of no route may be one of fanout's own endpoints
//! (`/healthz`, `/metrics`, and `/failpoints` in a test build).

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fanout_model::contract::{HEALTHZ_PATH, METRICS_PATH};

use crate::balance::{self, Reply};
use crate::fan_out::ingest::ingest;
use crate::ingress::answer::{json, method_not_allowed, not_found, Answer};
use crate::ingress::connection::Peer;
use crate::shared::Shared;
use crate::spec::TargetSpec;
use crate::table::RouteTable;

/// Serves one request on the ingest listener: a route's (by its mode), or the proxy's own
/// endpoints.
pub async fn handle<T: RouteTable>(
    shared: Arc<Shared<T>>,
    request: Request<Incoming>,
    peer: Arc<Peer>,
) -> Result<Response<Reply>, Infallible> {
    let route = T::route(request.uri().path(), request.headers());
    let response = match route.and_then(|route| Some((route, shared.table.pool(route)?))) {
        Some((route, pool)) => {
            let context = balance::Context {
                gate: shared.table.gate(route),
                metrics: shared.table.metrics(route),
                shutting_down: shared.shutting_down.load(Ordering::Relaxed),
                body_read_timeout: T::SERVER.body_read_timeout,
            };
            // Boxed: the relay's state is large, and inline it would make every request's
            // future (fan-out ones too) that much larger to create and move.
            Box::pin(balance::serve(pool, context, request, peer)).await
        }
        None if route.is_none() && balance::is_grpc(request.headers()) => {
            balance::grpc_status(not_found()).map(Either::Left)
        }
        None => fanout_or_own(&shared, route, request)
            .await
            .map(Either::Left),
    };
    // Handing over to a successor: every client is to reconnect, and reach the new process.
    if shared.handing_over.load(Ordering::Relaxed) {
        let (mut parts, body) = response.into_parts();
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return Ok(Response::from_parts(parts, body));
    }
    Ok(response)
}

/// A fan-out route's event, or the proxy's own endpoints.
async fn fanout_or_own<T: RouteTable>(
    shared: &Shared<T>,
    route: Option<T::Route>,
    request: Request<Incoming>,
) -> Answer {
    let path = request.uri().path();
    #[cfg(feature = "failpoints")]
    if path == "/failpoints" && request.method() == Method::PUT {
        let query = request.uri().query().unwrap_or("");
        return match crate::failpoints::configure(query) {
            Ok(()) => json(StatusCode::OK, Bytes::from_static(b"{}")),
            Err(error) => json(
                StatusCode::BAD_REQUEST,
                Bytes::from(serde_json::json!({ "error": error }).to_string()),
            ),
        };
    }
    match route {
        Some(route) if request.method() == Method::POST => ingest(shared, route, request).await,
        Some(_) => method_not_allowed(HeaderValue::from_static("POST")),
        // With `admin_listen`, `/metrics` and `/healthz` are served there, not here.
        None if shared.admin_apart => not_found(),
        None => own_endpoint(shared, path, request.method()),
    }
}

/// `/healthz`, `/metrics`, or 404: what the proxy answers itself (on the ingest listener, or
/// on `admin_listen`).
pub fn own_endpoint<T: RouteTable>(shared: &Shared<T>, path: &str, method: &Method) -> Answer {
    match (path, method) {
        (HEALTHZ_PATH, &Method::GET | &Method::HEAD) => health(shared),
        (METRICS_PATH, &Method::GET) => {
            let text = shared.metrics.render(&shared.table);
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (HEALTHZ_PATH, _) => method_not_allowed(HeaderValue::from_static("GET, HEAD")),
        (METRICS_PATH, _) => method_not_allowed(HeaderValue::from_static("GET")),
        _ => not_found(),
    }
}

/// `/healthz`: 200 `{"status":"ok"}` while fanout takes requests; targets whose own
/// connection is down (a NATS target's or NATS backend's client) are listed in
/// `nats_disconnected`: their events wait, or their requests get 503, meanwhile. Read when asked, never on the request path.
fn health<T: RouteTable>(shared: &Shared<T>) -> Answer {
    let mut disconnected = Vec::new();
    let mut down = |spec: &TargetSpec| {
        disconnected.push(serde_json::json!({ "route": spec.route, "target": spec.name }));
    };
    shared.table.lanes(&mut |lane| {
        if lane.target.endpoint.disconnected() {
            down(lane.target.spec);
        }
    });
    shared.table.pools(&mut |pool| pool.disconnected(&mut down));
    if disconnected.is_empty() {
        return json(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}"));
    }
    let body = serde_json::json!({ "status": "ok", "nats_disconnected": disconnected });
    json(StatusCode::OK, Bytes::from(body.to_string()))
}
