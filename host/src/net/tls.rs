//! TLS on the player listeners and the demo site (rustls), so a browser
//! on an `https://` page connects with `wss://` directly.
//!
//! The certificate is read from its files at start (a chain that does not
//! parse, or a key that does not match it, stops the start naming the
//! file) and again whenever the files change: new handshakes get the new
//! certificate, connections already open keep theirs. A change that does
//! not read keeps the certificate in use, and says why in the log.

use crate::config::TlsConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or holds no PEM of the right kind.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The key is not the certificate's.
    #[error("the key {key} does not match the certificate {cert}: {problem}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        problem: String,
    },
}

/// The certificate in use, swapped on reload.
#[derive(Debug)]
pub struct Certs {
    current: RwLock<Arc<CertifiedKey>>,
    cert: PathBuf,
    key: PathBuf,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a chain and its key, and checks they belong together.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let file_error = |path: &Path, problem: String| CertError::File {
        path: path.to_owned(),
        problem,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, format!("cannot read a PEM certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(file_error(cert, "holds no certificate".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_error(key, format!("not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}")))?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|e| CertError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        problem: e.to_string(),
    })
}

/// The listeners' TLS: an acceptor whose certificate follows its files.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    certs: Arc<Certs>,
}

impl Tls {
    /// Loads the certificate of `[tls]`.
    pub fn new(config: &TlsConfig) -> Result<Self, CertError> {
        let first = load(&config.cert, &config.key)?;
        let certs = Arc::new(Certs {
            current: RwLock::new(Arc::new(first)),
            cert: config.cert.clone(),
            key: config.key.clone(),
        });
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| CertError::File {
                path: config.cert.clone(),
                problem: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            certs,
        })
    }

    /// The acceptor for new connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again; on failure the certificate in use stays.
    /// Whether the certificate changed.
    pub fn reload(&self) -> Result<bool, CertError> {
        let fresh = load(&self.certs.cert, &self.certs.key)?;
        let mut current = self.certs.current.write().unwrap_or_else(|p| p.into_inner());
        if current.cert == fresh.cert {
            return Ok(false);
        }
        *current = Arc::new(fresh);
        Ok(true)
    }

    /// Reloads the certificate whenever its files' folders change (a
    /// reload that finds the same certificate changes nothing). `None` if
    /// they cannot be watched (logged).
    pub fn watch(&self) -> Option<notify::RecommendedWatcher> {
        let dirs = vec![
            crate::watch::folder_of(&self.certs.cert),
            crate::watch::folder_of(&self.certs.key),
        ];
        let this = self.clone();
        crate::watch::on_change("TLS certificate folder", dirs, move || match this.reload() {
            Ok(true) => tracing::info!(cert = %this.certs.cert.display(), "TLS certificate reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!("the TLS certificate changed but cannot be used; the one before stays: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tls")
            .join(name)
    }

    #[test]
    fn a_certificate_loads_only_with_its_own_key_and_errors_name_the_file() {
        assert!(load(&fixture("cert.pem"), &fixture("key.pem")).is_ok());
        match load(&fixture("cert.pem"), &fixture("key2.pem")) {
            Err(CertError::Mismatch { key, .. }) => assert!(key.ends_with("key2.pem")),
            other => panic!("{:?}", other.map(|_| ())),
        }
        let e = load(&fixture("key.pem"), &fixture("key.pem")).expect_err("a key is not a certificate");
        assert!(
            e.to_string().contains("key.pem") && e.to_string().contains("no certificate"),
            "{e}"
        );
        let e = load(&fixture("cert.pem"), &fixture("cert.pem")).expect_err("a certificate is not a key");
        assert!(e.to_string().contains("cert.pem"), "{e}");
        let e = load(&fixture("missing.pem"), &fixture("key.pem")).expect_err("missing");
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }
}
