//! `edgecore join` as a real process against a bootstrap HTTPS server
//! speaking the contract (`/ca.crt`, `/edge.crt` with a bearer token and a
//! CSR, renewal with the client certificate): the certificate it gets
//! connects to the test hub; a token whose hash does not match the CA, or a
//! forged token, is refused clearly; the running edge renews with its
//! certificate after the token has expired, and keeps no token on disk.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DnType, Issuer, KeyPair, PublicKeyData, SignatureAlgorithm};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::{NODE, Pki, TestHub, downstream, key, pod_json, wait_for};
use x509_parser::prelude::FromDer;

const SECRET: &str = "opaque-secret";

struct CsrKey {
    raw: Vec<u8>,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// Certificates the bootstrap endpoint issued.
#[derive(Default)]
struct Issued {
    /// All of them.
    total: AtomicUsize,
    /// Those asked for with a client certificate and no token.
    by_certificate: AtomicUsize,
}

/// The bootstrap endpoint: signs CSRs with a CA of its own (`ca_key`).
/// The token is good for one certificate (it has expired by the time the
/// edge renews); a renewal is authenticated by a client certificate of
/// the CA naming the node. The first certificate it issues is already past
/// 90% of its lifetime, so the edge renews it at once.
fn bootstrap(
    pki: &Pki,
    ca_params: CertificateParams,
    ca_key_pem: String,
    token: String,
    issued: Arc<Issued>,
) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone()));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pki.ca_der.clone())).unwrap();
    let clients =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .allow_unauthenticated()
            .build()
            .unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(clients)
            .with_single_cert(vec![CertificateDer::from(pki.server_cert.clone())], key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let ca_der = pki.ca_der.clone();
    std::thread::spawn(move || {
        let ca_key = KeyPair::from_pem(&ca_key_pem).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        for sock in listener.incoming() {
            let Ok(sock) = sock else { continue };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            let (path, headers, body) = loop {
                let Ok(n) = tls.read(&mut buf) else {
                    break (String::new(), vec![], vec![]);
                };
                if n == 0 {
                    break (String::new(), vec![], vec![]);
                }
                req.extend_from_slice(&buf[..n]);
                let mut h = [httparse::EMPTY_HEADER; 16];
                let mut r = httparse::Request::new(&mut h);
                if let Ok(httparse::Status::Complete(head)) = r.parse(&req) {
                    let hs: Vec<(String, String)> = r
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    let len: usize = hs
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .map_or(0, |(_, v)| v.parse().unwrap());
                    if req.len() >= head + len {
                        break (
                            r.path.unwrap().to_owned(),
                            hs,
                            req[head..head + len].to_vec(),
                        );
                    }
                }
            };
            let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            let client_cn = tls.conn.peer_certificates().and_then(|c| {
                let (_, cert) = x509_parser::parse_x509_certificate(c.first()?).ok()?;
                let cn = cert.subject().iter_common_name().next()?;
                Some(cn.as_str().ok()?.to_owned())
            });
            let authorization = header("authorization");
            let token_ok = authorization == Some(format!("Bearer {token}"))
                && issued.total.load(Ordering::SeqCst) == 0;
            let by_certificate = authorization.is_none() && client_cn.is_some();
            let (status, out) = match path.as_str() {
                "/ca.crt" => (200, ca_der.clone()),
                "/edge.crt" if !token_ok && !by_certificate => (401, b"bad token".to_vec()),
                "/edge.crt" if by_certificate && client_cn != header("nodename") => {
                    (403, b"client certificate names another node".to_vec())
                }
                "/edge.crt" => {
                    let (_, csr) =
                        x509_parser::certification_request::X509CertificationRequest::from_der(
                            &body,
                        )
                        .unwrap();
                    let info = &csr.certification_request_info;
                    let cn = info
                        .subject
                        .iter_common_name()
                        .next()
                        .unwrap()
                        .as_str()
                        .unwrap();
                    if Some(cn.to_owned()) != header("nodename") {
                        (403, b"CN is not NodeName".to_vec())
                    } else {
                        let pk = CsrKey {
                            raw: info.subject_pki.subject_public_key.data.to_vec(),
                        };
                        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
                        p.distinguished_name.push(DnType::CommonName, cn);
                        if by_certificate {
                            issued.by_certificate.fetch_add(1, Ordering::SeqCst);
                        }
                        if issued.total.fetch_add(1, Ordering::SeqCst) == 0 {
                            let now = SystemTime::now();
                            p.not_before = (now - Duration::from_secs(1000)).into();
                            p.not_after = (now + Duration::from_secs(60)).into();
                        }
                        (200, p.signed_by(&pk, &issuer).unwrap().der().to_vec())
                    }
                }
                _ => (404, b"not found".to_vec()),
            };
            let mut resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                out.len()
            )
            .into_bytes();
            resp.extend_from_slice(&out);
            let _ = tls.write_all(&resp);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    addr
}

fn join(
    token: &str,
    cert_server: SocketAddr,
    cloud: &str,
    data: &std::path::Path,
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgecore"))
        .args(["join", "--token", token, "--cloud", cloud, "--node", NODE])
        .arg("--cert-server")
        .arg(cert_server.to_string())
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

#[test]
fn join_gets_a_certificate_that_the_cloud_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, ca_params, ca_key) = support::pki_with_ca_key(&dir.path().join("pki"));
    let hash = edge_core::join::sha256_hex(&pki.ca_der);
    let token = format!("{hash}.{SECRET}");
    let issued = Arc::new(Issued::default());
    let cert_server = bootstrap(&pki, ca_params, ca_key, token.clone(), issued.clone());
    let hub = TestHub::start(&pki, "127.0.0.1:0");
    let data = dir.path().join("edge");

    // A token whose hash names another CA is refused before anything else.
    let wrong = format!("{}.{SECRET}", "ab".repeat(32));
    let out = join(&wrong, cert_server, &hub.addr.to_string(), &data);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match the token"), "{err}");
    assert!(!data.join("certs/server.crt").exists());

    // A forged secret: the server answers 401, join says so.
    let out = join(
        &format!("{hash}.forged"),
        cert_server,
        &hub.addr.to_string(),
        &data,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401"), "{err}");

    let out = join(&token, cert_server, &hub.addr.to_string(), &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(issued.total.load(Ordering::SeqCst), 1);
    let first = std::fs::read(data.join("certs/server.crt")).unwrap();
    for f in [
        "ca/rootCA.crt",
        "certs/server.crt",
        "certs/server.key",
        "edgecore.toml",
    ] {
        assert!(data.join(f).exists(), "{f} missing");
    }
    // The written configuration runs and the cloud accepts the certificate.
    let config = data.join("edgecore.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains(SECRET), "the token stays out of {text}");
    let text = text.replace("127.0.0.1:10550", "127.0.0.1:0");
    std::fs::write(&config, text).unwrap();
    let _edge = support::Edge::start(&config);
    let k = key("pod", "default", "joined");
    hub.send(
        k.clone(),
        downstream("insert", &k, 1, pod_json("default", "joined", 1)),
    );
    wait_for(30, "the joined edge to commit", || {
        hub.delivered(&k) == Some(1)
    });

    // Rotation: the first certificate is due for renewal, so the running
    // edge asks for a new one with that certificate (the token no longer
    // works) and replaces it on disk.
    wait_for(30, "the certificate to be renewed", || {
        issued.by_certificate.load(Ordering::SeqCst) == 1
            && issued.total.load(Ordering::SeqCst) == 2
            && std::fs::read(data.join("certs/server.crt")).unwrap() != first
    });
    let (nb, na) = edge_core::join::validity(&data.join("certs/server.crt")).unwrap();
    assert!(
        na - nb > 3600,
        "the renewed certificate is the long-lived one"
    );
}
