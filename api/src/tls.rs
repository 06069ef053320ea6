//! HTTPS: the certificate and key, read and checked once at start.
//!
//! The server speaks TLS 1.2 and 1.3 through rustls (on ring, with no
//! OpenSSL), offering HTTP/1.1 by ALPN, the only HTTP version it serves;
//! the WebSocket of `/graphql/ws` rides on the same connection as any
//! request does. Both files are PEM: the certificate chain with the
//! server's own certificate first, and one private key (PKCS#8, PKCS#1 or
//! SEC1). Every problem is reported before anything listens, naming the
//! file and what is wrong with it, so a bad path or a swapped key never
//! shows up later as failed handshakes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::TlsFiles;

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the TLS {what} {}: {source}", path.display())]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not PEM, or holds nothing of the kind needed.
    #[error("the TLS {what} {} {problem}", path.display())]
    Content {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The key is not the one of the certificate, or rustls refuses the
    /// pair.
    #[error("the TLS key {} does not go with the certificate {}: {problem}", key.display(), cert.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// The server's TLS settings from the two files.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_chain(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = Arc::new(provider());
    let pair = |problem: String| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        problem,
    };
    if let Err(e) = provider.key_provider.load_private_key(key.clone_key()) {
        return Err(TlsError::Content {
            what: "key",
            path: files.key.clone(),
            problem: format!("is no RSA, ECDSA or Ed25519 key rustls can use: {e}"),
        });
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| pair(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                pair("the key is not the certificate's (was the other key given?)".to_string())
            }
            rustls::Error::InvalidCertificate(e) => TlsError::Content {
                what: "certificate",
                path: files.cert.clone(),
                problem: format!("is not a valid X.509 certificate: {e}"),
            },
            other => pair(other.to_string()),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The cryptography: ring, which the token signatures use already, so
/// that no C library beyond it (aws-lc, OpenSSL) has to be built. rustls
/// deprecates it for having no post-quantum key exchange: connections
/// agree their keys with X25519 or the NIST curves, as most of the web
/// still does.
#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The file's bytes.
fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of the chain file.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read("certificate", path)?;
    let content = |problem: &str| TlsError::Content {
        what: "certificate",
        path: path.to_path_buf(),
        problem: problem.to_string(),
    };
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(&format!("is not valid PEM: {}", pem_problem(&e))))?;
    if chain.is_empty() {
        return Err(if looks_like_key(&bytes) {
            content("holds a private key, not a certificate (were the two swapped?)")
        } else {
            content("holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        });
    }
    Ok(chain)
}

/// The key file's private key.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("key", path)?;
    let content = |problem: &str| TlsError::Content {
        what: "key",
        path: path.to_path_buf(),
        problem: problem.to_string(),
    };
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) if bytes.windows(16).any(|w| w == b"BEGIN CERTIFICAT") => {
            Err(content(
                "holds a certificate, not a private key (were the two swapped?)",
            ))
        }
        Err(pem::Error::NoItemsFound) => Err(content(
            "holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC)",
        )),
        Err(e) => Err(content(&format!("is not valid PEM: {}", pem_problem(&e)))),
    }
}

/// True when the bytes hold a PEM private key.
fn looks_like_key(bytes: &[u8]) -> bool {
    PrivateKeyDer::from_pem_slice(bytes).is_ok()
}

/// A PEM error in words.
fn pem_problem(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line".to_string(),
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed".to_string(),
        pem::Error::Base64Decode(_) => "a section's base64 is damaged".to_string(),
        other => other.to_string(),
    }
}
