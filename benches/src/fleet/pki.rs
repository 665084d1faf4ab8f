//! The simulated fleet's certificates: a CA, the hub's server certificate
//! for `localhost`, and one client certificate per node (CN = node id), all
//! Ed25519 (the cheapest handshake with aws-lc-rs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the fleet's certificates could not be made.
#[derive(Debug)]
pub struct PkiError(pub String);

impl std::fmt::Display for PkiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        Self(format!("certificate: {e}"))
    }
}

/// The CA and the hub's files, written to a directory.
pub struct Pki {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    roots: Arc<rustls::RootCertStore>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

fn key() -> Result<KeyPair, PkiError> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ED25519)?)
}

/// The CA's parameters: the same in every process, so that a worker
/// process that reads the CA's key signs as the CA did.
fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "fleetbench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(ca)
}

fn roots(ca_pem: &str) -> Result<Arc<rustls::RootCertStore>, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| PkiError(format!("CA: {e}")))?;
    roots
        .add(ca_der)
        .map_err(|e| PkiError(format!("CA: {e}")))?;
    Ok(Arc::new(roots))
}

impl Pki {
    /// The CA that [`Pki::new`] wrote to `dir`, to sign more client
    /// certificates in another process.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|e| PkiError(format!("reading {}: {e}", path.display())))
        };
        let ca_key = KeyPair::from_pem(&read("ca.key")?)?;
        Ok(Self {
            ca_file: dir.join("ca.crt"),
            cert_file: dir.join("server.crt"),
            key_file: dir.join("server.key"),
            issuer: Issuer::new(ca_params()?, ca_key),
            roots: roots(&read("ca.crt")?)?,
        })
    }

    /// Makes the CA and the hub's certificate and writes them to `dir`.
    pub fn new(dir: &Path) -> Result<Self, PkiError> {
        let ca = ca_params()?;
        let ca_key = key()?;
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca, ca_key);
        let server_key = key()?;
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "cloudhub");
        let server_pem = server.signed_by(&server_key, &issuer)?.pem();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| PkiError(format!("writing {}: {e}", path.display())))?;
            Ok::<_, PkiError>(path)
        };
        let ca_file = write("ca.crt", &ca_pem)?;
        let cert_file = write("server.crt", &server_pem)?;
        let key_file = write("server.key", &server_key.serialize_pem())?;
        write("ca.key", &ca_key_pem)?;
        Ok(Self {
            ca_file,
            cert_file,
            key_file,
            issuer,
            roots: roots(&ca_pem)?,
        })
    }

    /// A certificate and key for `node`, as PEM files in `dir` (for an
    /// `edgecore` process).
    pub fn client_files(&self, node: &str, dir: &Path) -> Result<(PathBuf, PathBuf), PkiError> {
        let key = key()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, node);
        let cert = params.signed_by(&key, &self.issuer)?;
        let write = |name: String, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| PkiError(format!("writing {}: {e}", path.display())))?;
            Ok::<_, PkiError>(path)
        };
        Ok((
            write(format!("{node}.crt"), &cert.pem())?,
            write(format!("{node}.key"), &key.serialize_pem())?,
        ))
    }

    /// A TLS 1.3 client configuration presenting a certificate for `node`.
    pub fn client(&self, node: &str) -> Result<Arc<rustls::ClientConfig>, PkiError> {
        let key = key()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, node);
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
            .map_err(|e| PkiError(format!("key: {e}")))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| PkiError(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(vec![cert.der().clone()], key)
            .map_err(|e| PkiError(e.to_string()))?;
        Ok(Arc::new(config))
    }
}
