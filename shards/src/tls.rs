//! TLS 1.3 with mutual authentication: the server configuration built from
//! PEM files, the node id proven by a client certificate, and [`Session`],
//! the byte-level state of one connection that moves with it between shards.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read {what} from {path}: {detail}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// Server configuration: TLS 1.3 only, aws-lc-rs, a client certificate
/// signed by `ca` required.
pub fn server_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca_cert in read_certs(ca)? {
        roots
            .add(ca_cert)
            .map_err(|e| TlsConfigError::Rustls(format!("CA {}: {e}", ca.display())))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    let chain = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsConfigError::Pem {
        what: "a private key",
        path: key.to_owned(),
        detail: e.to_string(),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    // Edges keep one long-lived link: session tickets would cost every
    // handshake of a reconnect storm an encryption and a send for little use.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsConfigError::Pem {
            what: "certificates",
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The node id a client certificate proves: its subject common name, or else
/// its first DNS subject alternative name (KubeEdge puts the node name in the
/// CN). `None` when the certificate names no node.
pub fn node_id(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty());
    if let Some(cn) = cn {
        return Some(cn.to_owned());
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(dns) if !dns.is_empty() => {
            Some((*dns).to_owned())
        }
        _ => None,
    })
}

/// Why a connection's TLS failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The byte-level state of one connection: TLS, or plaintext on the
/// benchmark-only port. Owned by one shard at a time; `Send`, so it moves
/// with the socket during a hand-off.
#[derive(Debug)]
pub enum Session {
    Tls(Box<rustls::ServerConnection>),
    Plain,
}

impl Session {
    pub fn tls(config: Arc<ServerConfig>) -> Result<Self, SessionError> {
        let mut conn = rustls::ServerConnection::new(config)?;
        // The hub bounds what it queues per link (window × batch size);
        // rustls must not cut a batch short.
        conn.set_buffer_limit(None);
        Ok(Self::Tls(Box::new(conn)))
    }

    /// Takes bytes received from the socket and appends the plaintext they
    /// carry to `plain`. On error, the alert to send is ready in
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn handle_received(
        &mut self,
        mut bytes: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<(), SessionError> {
        let conn = match self {
            Self::Plain => {
                plain.extend_from_slice(bytes);
                return Ok(());
            }
            Self::Tls(conn) => conn,
        };
        loop {
            if !bytes.is_empty() {
                conn.read_tls(&mut bytes)?;
                conn.process_new_packets()?;
            }
            match conn.reader().read_to_end(plain) {
                Ok(_) => {}
                // No more plaintext for now (or the peer closed cleanly:
                // the socket read will return 0 next).
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
            if bytes.is_empty() {
                return Ok(());
            }
        }
    }

    /// Ends the session: a TLS close_notify goes after what is queued.
    pub fn close(&mut self, out: &mut Vec<u8>) {
        if let Self::Tls(conn) = self {
            conn.send_close_notify();
            let _ = self.poll_transmit(out);
        }
    }

    /// Queues plaintext to send.
    pub fn write(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), SessionError> {
        match self {
            Self::Plain => out.extend_from_slice(bytes),
            Self::Tls(conn) => {
                conn.writer().write_all(bytes)?;
                self.poll_transmit(out)?;
            }
        }
        Ok(())
    }

    /// Appends the bytes ready to go to the socket to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Result<(), SessionError> {
        if let Self::Tls(conn) = self {
            while conn.wants_write() {
                conn.write_tls(out)?;
            }
        }
        Ok(())
    }

    /// Still in the TLS handshake.
    pub fn is_handshaking(&self) -> bool {
        match self {
            Self::Tls(conn) => conn.is_handshaking(),
            Self::Plain => false,
        }
    }

    /// The node id of the verified client certificate (TLS only).
    pub fn peer_node_id(&self) -> Option<String> {
        match self {
            Self::Tls(conn) => conn.peer_certificates()?.first().and_then(node_id),
            Self::Plain => None,
        }
    }
}
