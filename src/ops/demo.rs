//! `fanout demo`: tiny servers for the compiled routes' local targets, so a newcomer sees an
//! event fanned out and a request balanced with nothing else to start. A fan-out target gets
//! a receiver that prints what it gets and answers 200; a balance backend gets a worker of a
//! small count service (`POST /items/{tenant}` adds an item, `GET /items/{tenant}/count`
//! tells how many), its counts shared by the demo's workers as a database would be.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

use crate::ops::startup::StartupError;
use crate::shared::Shared;
use crate::sink::Endpoint;
use crate::table::RouteTable;

/// What a demo server on a local address plays.
#[derive(Clone, Copy)]
enum Role {
    Receiver,
    Worker,
}

/// Items per tenant, shared by every demo worker.
type Counts = Arc<Mutex<HashMap<String, u64>>>;

/// Binds a demo server on each local target address of the proxy (urls as resolved at
/// start-up, so `${NAME:-default}` moves them) and serves them in the background.
pub async fn start<T: RouteTable>(shared: &Shared<T>) -> Result<(), StartupError> {
    let mut addresses = BTreeMap::new();
    shared.table.lanes(&mut |lane| {
        let Endpoint::Http(http) = &lane.target.endpoint else {
            return;
        };
        if let Some(address) = local_address(&http.uri) {
            addresses
                .entry(address)
                .or_insert((lane.target.spec.name, Role::Receiver));
        }
    });
    shared.table.pools(&mut |pool| {
        for (name, uri) in pool.backends() {
            if let Some(address) = local_address(uri) {
                addresses.entry(address).or_insert((name, Role::Worker));
            }
        }
    });
    let counts = Counts::default();
    for (address, (name, role)) in addresses {
        let listener = TcpListener::bind(address).await.map_err(|e| {
            StartupError(format!(
                "demo server for target \"{name}\" cannot listen on {address}: {e}"
            ))
        })?;
        let what = match role {
            Role::Receiver => "receiver for target",
            Role::Worker => "worker for backend",
        };
        println!("demo: {what} {name} listening on http://{address}");
        tokio::spawn(serve(listener, name, role, counts.clone()));
    }
    Ok(())
}

/// The socket address of an `http://` url on 127.0.0.1 or localhost, if it is one.
fn local_address(uri: &Uri) -> Option<SocketAddr> {
    let local = matches!(uri.host()?, "127.0.0.1" | "localhost");
    (uri.scheme_str() == Some("http") && local)
        .then(|| SocketAddr::from(([127, 0, 0, 1], uri.port_u16().unwrap_or(80))))
}

async fn serve(listener: TcpListener, name: &'static str, role: Role, counts: Counts) {
    while let Ok((stream, _)) = listener.accept().await {
        let counts = counts.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let counts = counts.clone();
                async move {
                    match role {
                        Role::Receiver => receive(name, request).await,
                        Role::Worker => work(name, request, &counts).await,
                    }
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn receive(
    name: &str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |h: &str| {
        request
            .headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let (id, route, attempt) = (
        header("fanout-event-id"),
        header("fanout-route"),
        header("fanout-attempt"),
    );
    let path = request.uri().path().to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    println!(
        "demo: {name} got POST {path} route={route} id={id} attempt={attempt} body={}",
        String::from_utf8_lossy(&body)
    );
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// The count service: `POST /items/{tenant}` adds an item, `GET /items/{tenant}/count`
/// answers how many, `GET /healthz` says it is up.
async fn work(
    name: &str,
    request: Request<Incoming>,
    counts: &Counts,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
    let (status, body) = match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => (StatusCode::OK, "{\"status\":\"ok\"}".to_owned()),
        (&Method::POST, ["items", tenant]) => {
            let count = counts.entry((*tenant).to_owned()).or_default();
            *count += 1;
            let body =
                format!("{{\"worker\":\"{name}\",\"tenant\":\"{tenant}\",\"count\":{count}}}");
            (StatusCode::CREATED, body)
        }
        (&Method::GET, ["items", tenant, "count"]) => {
            let count = counts.get(*tenant).copied().unwrap_or(0);
            let body =
                format!("{{\"worker\":\"{name}\",\"tenant\":\"{tenant}\",\"count\":{count}}}");
            (StatusCode::OK, body)
        }
        _ => (
            StatusCode::NOT_FOUND,
            "{\"error\":\"no such item path\"}".to_owned(),
        ),
    };
    drop(counts);
    if path != "/healthz" {
        println!(
            "demo: worker {name} answered {method} {path} with {}",
            status.as_u16()
        );
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
