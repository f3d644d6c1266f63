//! The outbound HTTP client: one connection-pooled, keep-alive client shared by every lane,
//! speaking http and https (rustls with webpki's roots). Targets with a `ca_file` share one
//! more client per distinct file, which also trusts that file's certificates.

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

use crate::startup::StartupError;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How long an idle pooled connection to a target is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The shared client, plus one per distinct `ca_file`; used at start-up only, to hand each
/// target its client.
pub struct Clients {
    shared: HttpClient,
    by_ca_file: HashMap<String, HttpClient>,
}

impl Clients {
    pub fn new() -> Clients {
        Clients {
            shared: client(webpki_roots()),
            by_ca_file: HashMap::new(),
        }
    }

    /// The client for a target: the shared one, or the one trusting `ca_file` (read now, so a
    /// bad file stops start-up).
    pub fn get(&mut self, ca_file: Option<&str>) -> Result<HttpClient, StartupError> {
        let Some(path) = ca_file else {
            return Ok(self.shared.clone());
        };
        if let Some(client) = self.by_ca_file.get(path) {
            return Ok(client.clone());
        }
        let client = client(roots_with(path)?);
        self.by_ca_file.insert(path.to_owned(), client.clone());
        Ok(client)
    }
}

impl Default for Clients {
    fn default() -> Clients {
        Clients::new()
    }
}

fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn roots_with(path: &str) -> Result<RootCertStore, StartupError> {
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

fn client(roots: RootCertStore) -> HttpClient {
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
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector)
}
