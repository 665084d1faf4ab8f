//! The certificate authority of a cloudcontrol data dir: `ca/rootCA.crt`
//! and `ca/rootCA.key` (PEM, made on first start), the server certificate
//! `certs/server.crt`/`.key` used by the bootstrap endpoint and by
//! cloudhub, and signing of edge CSRs (CN = node id).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};

use clock::unix_ms;

/// Why the CA or the server certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {detail}", path.display())]
    Invalid { path: PathBuf, detail: String },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Why a CSR was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("CSR does not parse or its signature is invalid: {0}")]
    BadCsr(String),
    #[error("CSR asks for CN {csr_cn:?}, but the request is for node {node:?}")]
    NameMismatch { node: String, csr_cn: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The CA of this data dir.
#[derive(Debug)]
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
    pub cert_path: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), CaError> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// `(year, month, day)` of `ms` since the epoch.
fn ymd(ms: u64) -> (i32, u8, u8) {
    let s = clock::rfc3339(ms);
    let n = |r: std::ops::Range<usize>| s[r].parse::<i32>().unwrap_or(1);
    (n(0..4), n(5..7) as u8, n(8..10) as u8)
}

/// Sets the validity: from yesterday (clock skew) to `days` from today.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = unix_ms();
    let (y, m, d) = ymd(now.saturating_sub(86_400_000));
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(now + u64::from(days) * 86_400_000);
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

impl Ca {
    /// Loads the CA from `data_dir/ca`, creating it if absent.
    pub fn load_or_create(data_dir: &Path) -> Result<Ca, CaError> {
        let cert_path = data_dir.join("ca/rootCA.crt");
        let key_path = data_dir.join("ca/rootCA.key");
        if !cert_path.exists() || !key_path.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "Apiary CA");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            validity(&mut params, 3650);
            let cert = params.self_signed(&key)?;
            write_new(&key_path, &key.serialize_pem(), 0o600)?;
            write_new(&cert_path, &cert.pem(), 0o644)?;
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let invalid = |path: &Path, e: &dyn std::fmt::Display| CaError::Invalid {
            path: path.to_owned(),
            detail: e.to_string(),
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(&key_path, &e))?;
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| invalid(&cert_path, &e))?
            .to_vec();
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| invalid(&cert_path, &e))?;
        Ok(Ca {
            issuer,
            der,
            cert_path,
        })
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Makes `certs/server.crt`/`.key` if absent (SANs: `sans`, IPs or DNS
    /// names). Returns their paths.
    pub fn ensure_server_cert(
        &self,
        data_dir: &Path,
        sans: &[String],
    ) -> Result<(PathBuf, PathBuf), CaError> {
        let cert_path = data_dir.join("certs/server.crt");
        let key_path = data_dir.join("certs/server.key");
        if !cert_path.exists() || !key_path.exists() {
            // Ed25519: the cheapest server handshakes with aws-lc-rs.
            let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
            let mut params = CertificateParams::new(sans.to_vec())?;
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, "cloudcore");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            validity(&mut params, 3650);
            let cert = params.signed_by(&key, &self.issuer)?;
            write_new(&key_path, &key.serialize_pem(), 0o600)?;
            write_new(&cert_path, &cert.pem(), 0o644)?;
        }
        Ok((cert_path, key_path))
    }

    /// Signs an edge's CSR (DER) for `node`: the CSR's CN must be `node`.
    /// The certificate has CN = `node`, client authentication, and is valid
    /// for `days` days. Returns it in DER.
    pub fn sign_csr(&self, node: &str, csr_der: &[u8], days: u32) -> Result<Vec<u8>, SignError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| SignError::BadCsr(e.to_string()))?;
        let cn = match csr.params.distinguished_name.get(&DnType::CommonName) {
            Some(DnValue::Utf8String(s)) => s.clone(),
            Some(DnValue::PrintableString(s)) => s.as_str().to_owned(),
            Some(DnValue::Ia5String(s)) => s.as_str().to_owned(),
            Some(_) | None => String::new(),
        };
        if cn != node {
            return Err(SignError::NameMismatch {
                node: node.to_owned(),
                csr_cn: cn,
            });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, node);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, days);
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        let cert = signed
            .signed_by(&self.issuer)
            .map_err(|e| SignError::Sign(e.to_string()))?;
        Ok(cert.der().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn csr(cn: &str, alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn signs_p256_and_ed25519_csrs_with_cn_and_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ED25519] {
            let der = ca.sign_csr("edge-1", &csr("edge-1", alg), 30).unwrap();
            let (_, cert) = X509Certificate::from_der(&der).unwrap();
            let cn = cert
                .subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap();
            assert_eq!(cn, "edge-1");
            let days = (cert.validity().not_after.timestamp()
                - cert.validity().not_before.timestamp())
                / 86_400;
            assert!((30..=32).contains(&days), "{days}");
            let (_, ca_cert) = X509Certificate::from_der(ca.der()).unwrap();
            cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        }
        assert!(matches!(
            ca.sign_csr("edge-1", &csr("edge-2", &rcgen::PKCS_ED25519), 30),
            Err(SignError::NameMismatch { .. })
        ));
        assert!(matches!(
            ca.sign_csr("edge-1", b"garbage", 30),
            Err(SignError::BadCsr(_))
        ));
        // The same CA on reload.
        let again = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(again.der(), ca.der());
    }
}
