//! The TLS listener (`server.tls` or `--tls-cert`/`--tls-key`): rustls with TLS 1.2 and 1.3,
//! ALPN `h2` and `http/1.1`. The certificate and key are read at start-up and again on SIGHUP;
//! a reload swaps what new handshakes get, so connections already open keep theirs, and a
//! reload that fails (a file missing or not PEM) keeps the old certificate and says why.

use rustls::crypto::ring::{default_provider, sign::any_supported_type};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

use crate::ops::startup::StartupError;

/// ALPN protocols offered, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The listener's certificate, as last read from its files.
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    /// What new handshakes get; shared with the config's resolver, swapped by a reload.
    current: Arc<Current>,
    acceptor: TlsAcceptor,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

/// Hands every handshake the certificate read last.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

impl Certificates {
    /// Reads `cert` and `key`; an error names the file and what is wrong with it.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Arc<Certificates>, StartupError> {
        let current = Arc::new(Current(RwLock::new(read(&cert, &key)?)));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(Certificates {
            cert,
            key,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }))
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again; new handshakes get the new certificate, open connections keep
    /// theirs. On failure the old one stays.
    pub fn reload(&self) -> Result<(), StartupError> {
        let fresh = read(&self.cert, &self.key)?;
        *self.current.0.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Reloads on every SIGHUP, for the life of the process (reading the files off the
    /// runtime's workers).
    pub fn reload_on_sighup(self: &Arc<Self>) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot install a SIGHUP handler: certificates are not reloaded");
            return;
        };
        let certificates = self.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let reloading = certificates.clone();
                let reloaded = tokio::task::spawn_blocking(move || reloading.reload()).await;
                match reloaded {
                    Ok(Ok(())) => {
                        tracing::info!(cert = %certificates.cert.display(), "SIGHUP: TLS certificate reloaded")
                    }
                    Ok(Err(error)) => {
                        tracing::error!(%error, "SIGHUP: TLS certificate not reloaded; the old one stays")
                    }
                    Err(error) => {
                        tracing::error!(%error, "SIGHUP: TLS certificate not reloaded; the old one stays")
                    }
                }
            }
        });
    }
}

fn read(cert: &PathBuf, key: &PathBuf) -> Result<Arc<CertifiedKey>, StartupError> {
    let file_error = |path: &PathBuf, why: String| {
        StartupError(format!("server.tls: {}: {why}", path.display()))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(cert, "holds no PEM certificate".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e.to_string()))?;
    let signing = any_supported_type(&private)
        .map_err(|e| file_error(key, format!("not a usable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| file_error(key, format!("does not match the certificate: {e}")))?;
    Ok(Arc::new(certified))
}
