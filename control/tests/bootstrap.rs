//! Certificate bootstrap over real HTTPS with a real rustls client, as an
//! edge does it: fetch /ca.crt without verification, check its hash against
//! the token, then ask /edge.crt with the CA verified. Forged and expired
//! tokens, a CSR for another node and garbage are refused.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;

use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use x509_parser::prelude::*;

/// Trusts any server: only for fetching /ca.crt, which is then checked
/// against the token's hash.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn client(ca: Option<&[u8]>) -> Arc<rustls::ClientConfig> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let cfg = match ca {
        Some(der) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from(der.to_vec())).unwrap();
            b.with_root_certificates(roots).with_no_client_auth()
        }
        None => b
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider())))
            .with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// One request over HTTPS; returns (status, body).
fn request(
    addr: &str,
    cfg: &Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>), rustls::Error> {
    let conn =
        rustls::ClientConnection::new(cfg.clone(), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let io = |e: std::io::Error| match e
        .into_inner()
        .and_then(|i| i.downcast::<rustls::Error>().ok())
    {
        Some(e) => *e,
        None => rustls::Error::General("io".into()),
    };
    tls.write_all(req.as_bytes()).map_err(io)?;
    tls.write_all(body).map_err(io)?;
    let mut resp = Vec::new();
    tls.read_to_end(&mut resp).map_err(io)?;
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut r = httparse::Response::new(&mut headers);
    let head = match r.parse(&resp).unwrap() {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("partial response"),
    };
    Ok((r.code.unwrap(), resp[head..].to_vec()))
}

fn csr(cn: &str, alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.serialize_request(&key).unwrap().der().to_vec()
}

fn token(data: &std::path::Path, ttl: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cloudcontrol"))
        .args(["token", "--ttl", ttl, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn sha256_hex(b: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn edge_bootstrap_flow_and_refusals() {
    let t = tempfile::tempdir().unwrap();
    let (m, data, rings) = support::dirs(t.path());
    support::example_manifests(&m);
    let cloud = support::Cloud::start(&m, &data, &rings, 1);
    let addr = cloud.certs.replace("0.0.0.0", "127.0.0.1");
    let tok = token(&data, "24h");

    // 1. /ca.crt without verification; its hash is the token's prefix.
    let (status, ca) = request(&addr, &client(None), "/ca.crt", &[], b"").unwrap();
    assert_eq!(status, 200);
    assert_eq!(tok.split_once('.').unwrap().0, sha256_hex(&ca));

    // 2. /edge.crt, verifying the server with that CA: a certificate with
    //    CN = the node, signed by the CA, for P-256 and Ed25519 keys.
    let verified = client(Some(&ca));
    let (_, ca_cert) = X509Certificate::from_der(&ca).unwrap();
    for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ED25519] {
        let auth = format!("Bearer {tok}");
        let hdrs = [("Authorization", auth.as_str()), ("NodeName", "edge-1")];
        let (status, der) =
            request(&addr, &verified, "/edge.crt", &hdrs, &csr("edge-1", alg)).unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&der));
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "edge-1"
        );
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86_400;
        assert!((365..=367).contains(&days), "{days}");
    }

    // A server with another CA is refused by the verified client.
    let other = tempfile::tempdir().unwrap();
    let other_ca = control::certs::Ca::load_or_create(other.path()).unwrap();
    assert!(request(&addr, &client(Some(other_ca.der())), "/ca.crt", &[], b"").is_err());

    let ask = |auth: &str, node: &str, body: &[u8]| {
        let hdrs = [("Authorization", auth), ("NodeName", node)];
        request(&addr, &verified, "/edge.crt", &hdrs, body)
            .unwrap()
            .0
    };
    let good = format!("Bearer {tok}");
    let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
    // Forged: expiry pushed out without the key; or another data dir's token.
    let (ca_hash, secret) = tok.split_once('.').unwrap();
    let (_, rest) = secret.split_once('-').unwrap();
    assert_eq!(
        ask(
            &format!("Bearer {ca_hash}.9999999999-{rest}"),
            "edge-1",
            &csr("edge-1", p256)
        ),
        401
    );
    assert_eq!(
        ask(
            &format!("Bearer {}", token(other.path(), "24h")),
            "edge-1",
            &csr("edge-1", p256)
        ),
        401
    );
    assert_eq!(ask("", "edge-1", &csr("edge-1", p256)), 401);
    // Expired: made with this data dir's key, a minute in the past.
    let tokens = control::token::Tokens::load(&data, &ca).unwrap();
    let expired = tokens.issue(control::util::unix_ms() / 1000 - 120, 60);
    assert_eq!(
        ask(&format!("Bearer {expired}"), "edge-1", &csr("edge-1", p256)),
        401
    );
    // CN spoofing: a CSR for edge-2 sent as edge-1.
    assert_eq!(ask(&good, "edge-1", &csr("edge-2", p256)), 403);
    // Garbage CSR.
    assert_eq!(ask(&good, "edge-1", b"not a csr"), 400);

    // /node/{name}.
    let (status, body) = request(&addr, &verified, "/node/edge-1", &[], b"").unwrap();
    assert_eq!(status, 200);
    let node: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(node["metadata"]["name"], "edge-1");
    assert_eq!(
        request(&addr, &verified, "/node/nope", &[], b"").unwrap().0,
        404
    );

    // The server went on serving through all of it, and said why it refused.
    assert_eq!(
        request(&addr, &verified, "/ca.crt", &[], b"").unwrap().0,
        200
    );
    let log = cloud.log();
    assert!(log.contains("token signature is invalid"), "{log}");
    assert!(log.contains("token expired"), "{log}");
    assert!(
        log.contains("CSR asks for CN \\\"edge-2\\\"")
            || log.contains("CSR asks for CN \"edge-2\""),
        "{log}"
    );
    // The files cloudhub is started with exist.
    for f in [
        "ca/rootCA.crt",
        "ca/rootCA.key",
        "certs/server.crt",
        "certs/server.key",
    ] {
        assert!(data.join(f).exists(), "{f}");
    }
}
