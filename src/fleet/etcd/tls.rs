//! The TLS client config for `https://` etcd endpoints: the system's roots
//! plus an optional CA file (etcd clusters usually run on a private CA),
//! and an optional client certificate when etcd requires one
//! (`--client-cert-auth`).
//!
//! It offers only ALPN `http/1.1`, the protocol the transport speaks; etcd
//! serves the gateway on the same port as gRPC and picks by ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::EtcdError;

fn setup(path: &Path, what: &str, e: impl std::fmt::Display) -> EtcdError {
    EtcdError::Setup(format!("{}: {what}: {e}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, EtcdError> {
    let bytes = std::fs::read(path).map_err(|e| setup(path, "cannot read", e))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| setup(path, "not a PEM certificate", e))?;
    if certs.is_empty() {
        return Err(setup(path, "no certificate", "the file holds none"));
    }
    Ok(certs)
}

/// Build the config: roots from the system and `ca_file`, and the client
/// certificate `cert`/`key` when both are given.
pub fn client_config(
    ca_file: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, EtcdError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = ca_file {
        for cert in read_certs(ca)? {
            roots.add(cert).map_err(|e| setup(ca, "unusable CA certificate", e))?;
        }
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| EtcdError::Setup(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match client_cert {
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| setup(key, "not a PEM private key", e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| setup(key, "does not match the certificate", e))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
