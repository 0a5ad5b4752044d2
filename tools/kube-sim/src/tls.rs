//! TLS for the API, with the built-in test CA: kubectl sends a bearer token
//! only over TLS, so the simulator serves HTTPS by default.

use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The CA that signed the server certificate (PEM); kubeconfigs and token
/// secrets carry it. Test-only material, not a secret.
pub const CA_CERT_PEM: &str = include_str!("certs/ca.crt");
const SERVER_CERT_PEM: &str = include_str!("certs/server.crt");
const SERVER_KEY_PEM: &str = include_str!("certs/server.key");

/// An acceptor with the built-in server certificate (valid for 127.0.0.1,
/// ::1 and localhost), offering HTTP/2 and HTTP/1.1.
pub fn acceptor() -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_slice_iter(SERVER_CERT_PEM.as_bytes())
        .chain(CertificateDer::pem_slice_iter(CA_CERT_PEM.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("built-in certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY_PEM.as_bytes())
        .map_err(|e| format!("built-in key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
