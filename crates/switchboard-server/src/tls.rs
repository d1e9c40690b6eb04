//! TLS from PEM files, for both listeners.

use std::sync::Arc;

use tokio_rustls::rustls;

use crate::config::TlsConfig;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The PEM holds no usable certificate or key.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the certificate and key.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The PEM bytes of the certificate chain and key.
pub(crate) fn read_pem(tls: &TlsConfig) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| TlsError::Read { path: p.display().to_string(), source })
    };
    Ok((read(&tls.cert)?, read(&tls.key)?))
}

/// A rustls server configuration offering HTTP/2 and HTTP/1.1.
pub(crate) fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("certificate PEM is invalid: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("certificate file holds no certificate".into()));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| TlsError::Pem(format!("key PEM is invalid: {e}")))?
        .ok_or_else(|| TlsError::Pem("key file holds no private key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
