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

use crate::startup::StartupError;

/// ALPN protocols offered, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The listener's certificate, as last read from its files.
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
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

impl Certificates {
    /// Reads `cert` and `key`; an error names the file and what is wrong with it.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Arc<Certificates>, StartupError> {
        let current = read(&cert, &key)?;
        // The config's resolver reads the holder that owns the config: a weak reference, so
        // the two do not keep each other alive.
        let holder = Arc::new_cyclic(|weak: &std::sync::Weak<Certificates>| {
            let resolver = Arc::new(Resolver(weak.clone()));
            let mut config =
                rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
                    .with_safe_default_protocol_versions()
                    .expect("ring supports TLS 1.2 and 1.3")
                    .with_no_client_auth()
                    .with_cert_resolver(resolver);
            config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
            Certificates {
                cert,
                key,
                current: RwLock::new(current),
                acceptor: TlsAcceptor::from(Arc::new(config)),
            }
        });
        Ok(holder)
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again; new handshakes get the new certificate, open connections keep
    /// theirs. On failure the old one stays.
    pub fn reload(&self) -> Result<(), StartupError> {
        let fresh = read(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Reloads on every SIGHUP, for the life of the process.
    pub fn reload_on_sighup(self: &Arc<Self>) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot install a SIGHUP handler: certificates are not reloaded");
            return;
        };
        let certificates = self.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match certificates.reload() {
                    Ok(()) => {
                        tracing::info!(cert = %certificates.cert.display(), "SIGHUP: TLS certificate reloaded")
                    }
                    Err(error) => {
                        tracing::error!(%error, "SIGHUP: TLS certificate not reloaded; the old one stays")
                    }
                }
            }
        });
    }
}

/// Hands every handshake the certificate read last, from the holder (which owns the config
/// that owns this).
#[derive(Debug)]
struct Resolver(std::sync::Weak<Certificates>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let holder = self.0.upgrade()?;
        let current = holder.current.read().unwrap_or_else(|p| p.into_inner());
        Some(current.clone())
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
