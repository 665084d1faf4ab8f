//! The edges' certificates: cloudcontrol's CA ([`certs`]), join tokens
//! ([`token`]), and the HTTPS bootstrap endpoint that signs and renews edge
//! certificates ([`bootstrap`], with client certificates checked by
//! [`client_auth`]).
//!
//! It depends on nothing else of this crate but the small helpers of
//! [`crate::util`]: the PKI knows nothing of nodes' objects.

pub mod bootstrap;
pub mod certs;
pub mod client_auth;
pub mod token;

use std::path::Path;
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;

use self::bootstrap::Bootstrap;
use self::certs::{Ca, CaError};
use self::client_auth::EdgeCerts;
use self::token::Tokens;

/// Why the PKI of a data dir could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("CA: {0}")]
    Ca(#[from] CaError),
    #[error(transparent)]
    TokenKey(#[from] token::KeyError),
    #[error("TLS: {0}")]
    Tls(String),
}

/// Opens (creating) the CA, the server certificate for `sans`, and the
/// token key of `data_dir`: the bootstrap endpoint's state, with no edge
/// node known yet, and its TLS acceptor.
pub fn open(
    data_dir: &Path,
    sans: &[String],
    cert_days: u32,
) -> Result<(Arc<Bootstrap>, TlsAcceptor), PkiError> {
    let ca = Ca::load_or_create(data_dir)?;
    let (cert, key) = ca.ensure_server_cert(data_dir, sans)?;
    let tokens = Tokens::load(data_dir, ca.der())?;
    let edge_certs = EdgeCerts::new(ca.der()).map_err(PkiError::Tls)?;
    let acceptor = bootstrap::acceptor(&cert, &key, &edge_certs).map_err(PkiError::Tls)?;
    let state = Arc::new(Bootstrap {
        ca,
        edge_certs,
        tokens,
        cert_days,
        nodes: RwLock::new(Default::default()),
    });
    Ok((state, acceptor))
}
