//! TLS on both sides: the HTTPS listener's certificate, reloaded when its
//! files change, and the client configuration for `https://` backends.
//!
//! Only TLS 1.2 and 1.3 are offered (all rustls speaks), with rustls's
//! `ring` provider: it builds with a C compiler alone, where the default
//! provider needs cmake. The listener offers ALPN `h2` and `http/1.1`, and
//! the server speaks whichever the client chose (HTTP/1.1 when it chose
//! none; see `server`).
//!
//! A certificate rotation (cert-manager renewing a Secret, an operator
//! copying new files) must not drop a connection or serve a broken chain:
//! [`ServerTls`] keeps the running `ServerConfig` behind an `ArcSwap`, each
//! handshake takes the current one, and a reload that cannot parse both
//! files — half-written, mismatched key — is logged and changes nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError { path: path.to_path_buf(), message };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

/// Build the listener's TLS config from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(cert)?;
    let key_bytes =
        std::fs::read(key).map_err(|e| TlsError { path: key.to_path_buf(), message: format!("cannot read: {e}") })?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|e| TlsError { path: key.to_path_buf(), message: format!("not a PEM private key: {e}") })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError { path: cert.to_path_buf(), message: e.to_string() })?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| TlsError { path: key.to_path_buf(), message: format!("does not match the certificate: {e}") })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The listener's TLS config, swappable on certificate rotation.
#[derive(Debug)]
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<ServerConfig>,
    /// The file contents in force, to skip reloads that change nothing.
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl ServerTls {
    /// Load `cert` and `key`; an error here is fatal at startup.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let config = server_config(cert, key)?;
        let contents = (std::fs::read(cert).unwrap_or_default(), std::fs::read(key).unwrap_or_default());
        Ok(ServerTls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::new(config),
            loaded: Mutex::new(contents),
        })
    }

    /// The config for a new handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// The certificate and key files, for watching.
    pub fn files(&self) -> [&Path; 2] {
        [&self.cert, &self.key]
    }

    /// Re-read the files; apply them if they changed and are valid. A bad
    /// pair is logged and the running certificate stays.
    pub fn reload(&self) {
        let contents = (std::fs::read(&self.cert).unwrap_or_default(), std::fs::read(&self.key).unwrap_or_default());
        let Ok(mut loaded) = self.loaded.lock() else { return };
        if *loaded == contents {
            return;
        }
        match server_config(&self.cert, &self.key) {
            Ok(config) => {
                self.current.store(config);
                *loaded = contents;
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::error!(error = %e, "new TLS certificate rejected; the running one stays in force"),
        }
    }
}

/// The client config for `https://` backends: the system's roots plus an
/// optional extra CA file, offering `alpn` protocols.
pub fn client_config(ca_file: Option<&Path>, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "skipping an unreadable system root certificate");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if let Some(ca) = ca_file {
        for cert in read_certs(ca)? {
            roots.add(cert).map_err(|e| TlsError { path: ca.to_path_buf(), message: e.to_string() })?;
        }
    } else if added == 0 {
        tracing::warn!(
            "no system root certificates found; https backends will fail verification unless ca_file is set"
        );
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError { path: PathBuf::new(), message: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
