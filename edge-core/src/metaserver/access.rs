//! Who may use the MetaServer: anyone on the node over plain HTTP on a
//! loopback address (the default); otherwise HTTPS, with clients proven by
//! a certificate the configured CA signed (checked in the TLS handshake)
//! and/or the configured bearer token (checked on every request, 401
//! `Unauthorized` as the API server answers). The configuration refuses a
//! non-loopback address without them (`config::MetaServer::insecure`).

use std::path::Path;

use monoio_rustls::TlsAcceptor;

use crate::config;
use crate::tls::{TlsFilesError, server_config};

/// Why the MetaServer's access configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("MetaServer TLS: {0}")]
    Tls(#[from] TlsFilesError),
    #[error("MetaServer tokenFile {path}: {detail}")]
    Token { path: String, detail: String },
}

/// The MetaServer's TLS and token, as configured.
#[derive(Clone, Default)]
pub struct Access {
    pub(crate) tls: Option<TlsAcceptor>,
    token: Option<Vec<u8>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Access {
    /// Reads the files `ms` names.
    pub fn load(ms: &config::MetaServer) -> Result<Self, AccessError> {
        let tls = if ms.tls_cert_file.is_empty() {
            None
        } else {
            let ca = (!ms.tls_ca_file.is_empty()).then(|| Path::new(&ms.tls_ca_file));
            let cert = Path::new(&ms.tls_cert_file);
            let config = server_config(cert, Path::new(&ms.tls_private_key_file), ca)?;
            Some(TlsAcceptor::from(config))
        };
        let token = if ms.token_file.is_empty() {
            None
        } else {
            let error = |detail: String| AccessError::Token {
                path: ms.token_file.clone(),
                detail,
            };
            let text = std::fs::read_to_string(&ms.token_file).map_err(|e| error(e.to_string()))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(error("the file is empty".to_owned()));
            }
            Some(token.as_bytes().to_vec())
        };
        Ok(Self { tls, token })
    }

    /// Whether a request with this `Authorization` header may proceed.
    pub(super) fn allows(&self, authorization: &str) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = authorization
            .strip_prefix("Bearer ")
            .map_or(&[][..], |t| t.trim().as_bytes());
        constant_time_eq(given, token)
    }
}

/// Equality whose time depends on the lengths only, not on where the
/// bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_required_once_configured() {
        assert!(Access::default().allows(""), "no token configured");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let ms = config::MetaServer {
            token_file: file.display().to_string(),
            ..config::MetaServer::default()
        };
        let access = Access::load(&ms).unwrap();
        assert!(access.allows("Bearer s3cret"));
        for wrong in [
            "",
            "Bearer ",
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "s3cret",
        ] {
            assert!(!access.allows(wrong), "{wrong:?}");
        }
        std::fs::write(&file, " \n").unwrap();
        let e = Access::load(&ms).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
