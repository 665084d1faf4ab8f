//! Client certificates at the bootstrap endpoint, for renewal.
//!
//! The TLS server asks for a client certificate but does not require one
//! (a first join has only its token), and during the handshake checks only
//! that the client holds the key of the certificate it presents
//! ([`OptionalClientCert`]). Whether that certificate is a valid edge
//! certificate of this CA is decided by the request handler with
//! [`EdgeCerts::node_of`]: so an expired certificate, or one from another
//! CA, is refused with an HTTP answer that says why, where a check during
//! the handshake could only send a TLS alert. Nothing but renewal trusts
//! the client certificate.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Why a client certificate does not authenticate a renewal.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientCertError {
    #[error(
        "client certificate expired at {not_after}: renewal needs a valid certificate; \
         join the node again with a new token (edgecore join --token)"
    )]
    Expired { not_after: String },
    #[error("client certificate is not valid before {not_before} (check the clocks)")]
    NotYetValid { not_before: String },
    #[error("client certificate is not signed by this cloud's CA")]
    UnknownIssuer,
    #[error("client certificate is not an edge certificate (no client authentication use)")]
    NotEdge,
    #[error("client certificate has no common name")]
    NoCommonName,
    #[error("client certificate refused: {0}")]
    Invalid(String),
}

/// Checks edge certificates against the CA.
#[derive(Debug)]
pub struct EdgeCerts {
    webpki: Arc<dyn ClientCertVerifier>,
}

impl EdgeCerts {
    /// For the CA certificate `ca_der`.
    pub fn new(ca_der: &[u8]) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca_der.to_vec()))
            .map_err(|e| format!("CA certificate: {e}"))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("client certificate verifier: {e}"))?;
        Ok(Self { webpki })
    }

    /// The node that `chain` (end entity first) names, if it is an edge
    /// certificate signed by the CA and valid at `now_s` (Unix seconds).
    pub fn node_of(
        &self,
        chain: &[CertificateDer<'_>],
        now_s: u64,
    ) -> Result<String, ClientCertError> {
        let (end_entity, intermediates) = chain
            .split_first()
            .ok_or_else(|| ClientCertError::Invalid("no certificate".into()))?;
        let now = UnixTime::since_unix_epoch(Duration::from_secs(now_s));
        let parsed = x509_parser::parse_x509_certificate(end_entity.as_ref())
            .map(|(_, c)| c)
            .map_err(|e| ClientCertError::Invalid(format!("does not parse: {e}")))?;
        self.webpki
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| refusal(e, &parsed))?;
        let cn = parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .filter(|cn| !cn.is_empty())
            .ok_or(ClientCertError::NoCommonName)?;
        Ok(cn.to_owned())
    }
}

fn refusal(
    e: rustls::Error,
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> ClientCertError {
    let rustls::Error::InvalidCertificate(e) = e else {
        return ClientCertError::Invalid(e.to_string());
    };
    match e {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            ClientCertError::Expired {
                not_after: cert.validity().not_after.to_string(),
            }
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            ClientCertError::NotYetValid {
                not_before: cert.validity().not_before.to_string(),
            }
        }
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            ClientCertError::UnknownIssuer
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            ClientCertError::NotEdge
        }
        other => ClientCertError::Invalid(rustls::Error::InvalidCertificate(other).to_string()),
    }
}

/// Asks for an optional client certificate and accepts any whose key
/// signs the handshake; [`EdgeCerts::node_of`] judges it afterwards.
#[derive(Debug)]
pub struct OptionalClientCert {
    webpki: Arc<dyn ClientCertVerifier>,
}

impl OptionalClientCert {
    pub fn new(certs: &EdgeCerts) -> Arc<Self> {
        Arc::new(Self {
            webpki: certs.webpki.clone(),
        })
    }
}

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
