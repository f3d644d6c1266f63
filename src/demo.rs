//! `fanout demo`: tiny receivers for the compiled routes' local targets, so a newcomer sees an
//! event fanned out with nothing else to start. Each prints what it gets and answers 200.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;

use crate::proxy::Proxy;
use crate::sink::Endpoint;
use crate::startup::StartupError;
use crate::table::RouteTable;

/// Binds a receiver on each local target address of the proxy (urls as resolved at start-up,
/// so `${NAME:-default}` moves them) and serves them in the background.
pub async fn start<T: RouteTable>(proxy: &Proxy<T>) -> Result<(), StartupError> {
    let mut addresses = BTreeMap::new();
    proxy.table.lanes(&mut |lane| {
        let Endpoint::Http(http) = &lane.endpoint;
        if let Some(address) = local_address(&http.uri) {
            addresses.entry(address).or_insert(lane.spec.name);
        }
    });
    for (address, name) in addresses {
        let listener = TcpListener::bind(address).await.map_err(|e| {
            StartupError(format!(
                "demo receiver for target \"{name}\" cannot listen on {address}: {e}"
            ))
        })?;
        println!("demo: receiver for target {name} listening on http://{address}");
        tokio::spawn(serve(listener, name));
    }
    Ok(())
}

/// The socket address of an `http://` url on 127.0.0.1 or localhost, if it is one.
fn local_address(uri: &Uri) -> Option<SocketAddr> {
    let local = matches!(uri.host()?, "127.0.0.1" | "localhost");
    (uri.scheme_str() == Some("http") && local)
        .then(|| SocketAddr::from(([127, 0, 0, 1], uri.port_u16().unwrap_or(80))))
}

async fn serve(listener: TcpListener, name: &'static str) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let service = service_fn(move |request| receive(name, request));
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
