//! The outbound HTTP clients: one connection-pooled, keep-alive HTTP/1.1 client shared by
//! every lane, speaking http and https (rustls with webpki's roots). Targets with a `ca_file`
//! share one more client per distinct file, which also trusts that file's certificates, and
//! `http2: true` targets share HTTP/2-only clients (h2c with prior knowledge for http://),
//! which multiplex every delivery to a target on one connection.

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::ops::startup::StartupError;

/// Opens connections to http:// and https:// urls (TLS with ALPN as the client speaks).
pub type Connector = HttpsConnector<HttpConnector>;

pub type HttpClient = Client<Connector, Full<Bytes>>;

/// How long an idle pooled connection to a target is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The clients made so far, one per (`ca_file`, `http2`), with their connectors; used at
/// start-up only, to hand each target its client (fan-out lanes) and connector (balance
/// backends, which keep connections of their own).
#[derive(Default)]
pub struct Clients {
    made: HashMap<(Option<String>, bool), (HttpClient, Connector)>,
}

impl Clients {
    /// The client and connector for a target trusting `ca_file` too (read now, so a bad file
    /// stops start-up), speaking HTTP/2 only if `http2`.
    pub fn get(
        &mut self,
        ca_file: Option<&str>,
        http2: bool,
    ) -> Result<(HttpClient, Connector), StartupError> {
        let key = (ca_file.map(str::to_owned), http2);
        if let Some(made) = self.made.get(&key) {
            return Ok(made.clone());
        }
        let roots = match ca_file {
            Some(path) => roots_with(path)?,
            None => webpki_roots(),
        };
        let connector = connector(roots, http2);
        let made = (client(connector.clone(), http2), connector);
        self.made.insert(key, made.clone());
        Ok(made)
    }
}

fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// webpki's roots plus every certificate of the PEM file at `path` (at least one): also how a
/// NATS target's `ca_file` is checked at start-up.
pub fn roots_with(path: &str) -> Result<RootCertStore, StartupError> {
    let bad = |detail: String| StartupError(format!("ca_file \"{path}\": {detail}"));
    let mut roots = webpki_roots();
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(roots)
}

fn connector(roots: RootCertStore, http2: bool) -> Connector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if http2 {
        connector.enable_http2().wrap_connector(http)
    } else {
        connector.enable_http1().wrap_connector(http)
    }
}

fn client(connector: Connector, http2: bool) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .http2_only(http2)
        .build(connector)
}
