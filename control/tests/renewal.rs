//! Certificate renewal at the bootstrap endpoint, authenticated by the
//! node's current certificate over mutual TLS (no token), against a real
//! cloudcontrol: it works after the join token has expired, only for the
//! node the certificate names, and an expired certificate, one from another
//! CA or one that is not an edge certificate is refused with a reason.

mod support;

use std::time::{Duration, Instant, SystemTime};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::https::{client, client_with_cert, request};
use x509_parser::prelude::*;

fn key_and_csr(cn: &str) -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    let csr = p.serialize_request(&key).unwrap().der().to_vec();
    (key, csr)
}

fn common_name(der: &[u8]) -> String {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap();
    cn.as_str().unwrap().to_owned()
}

/// An edge certificate for `cn` signed by the CA of `data`, valid from
/// two days ago until yesterday.
fn expired_cert(data: &std::path::Path, cn: &str, key: &KeyPair) -> Vec<u8> {
    let ca_pem = std::fs::read_to_string(data.join("ca/rootCA.crt")).unwrap();
    let ca_key = std::fs::read_to_string(data.join("ca/rootCA.key")).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key).unwrap()).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = SystemTime::now();
    p.not_before = (now - Duration::from_secs(2 * 86_400)).into();
    p.not_after = (now - Duration::from_secs(86_400)).into();
    p.signed_by(key, &issuer).unwrap().der().to_vec()
}

fn body(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn renewal_with_the_current_certificate() {
    let t = tempfile::tempdir().unwrap();
    let (m, data, rings) = support::dirs(t.path());
    support::example_manifests(&m);
    let cloud = support::Cloud::start(&m, &data, &rings, 1);
    let addr = cloud.certs.replace("0.0.0.0", "127.0.0.1");
    let (_, ca) = request(&addr, &client(None), "/ca.crt", &[], b"").unwrap();
    let verified = client(Some(&ca));
    let (_, ca_cert) = X509Certificate::from_der(&ca).unwrap();

    // First join with a token that lives two seconds.
    let tokens = control::pki::token::Tokens::load(&data, &ca).unwrap();
    let short = format!("Bearer {}", tokens.issue(clock::unix_ms() / 1000, 2));
    let join_hdrs = [("Authorization", short.as_str()), ("NodeName", "edge-1")];
    let (key1, csr1) = key_and_csr("edge-1");
    let (status, cert1) = request(&addr, &verified, "/edge.crt", &join_hdrs, &csr1).unwrap();
    assert_eq!(status, 200, "{}", body(&cert1));

    // Then the token expires.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, csr) = key_and_csr("edge-1");
        let (status, _) = request(&addr, &verified, "/edge.crt", &join_hdrs, &csr).unwrap();
        if status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the token never expired");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Renewal with the certificate alone gives a new certificate for
    // edge-1, signed by the CA; that one renews in turn.
    let renew = |cert: &[u8], key: &KeyPair, node: &str, csr: &[u8]| {
        let cfg = client_with_cert(&ca, cert, &key.serialize_der());
        request(&addr, &cfg, "/edge.crt", &[("NodeName", node)], csr).unwrap()
    };
    let (key2, csr2) = key_and_csr("edge-1");
    let (status, cert2) = renew(&cert1, &key1, "edge-1", &csr2);
    assert_eq!(status, 200, "{}", body(&cert2));
    assert_ne!(cert2, cert1);
    assert_eq!(common_name(&cert2), "edge-1");
    let (_, parsed) = X509Certificate::from_der(&cert2).unwrap();
    parsed.verify_signature(Some(ca_cert.public_key())).unwrap();
    let (_, csr3) = key_and_csr("edge-1");
    let (status, cert3) = renew(&cert2, &key2, "edge-1", &csr3);
    assert_eq!(status, 200, "{}", body(&cert3));

    // edge-1's certificate cannot get one for edge-2, whatever NodeName says.
    let (_, csr_b) = key_and_csr("edge-2");
    for node in ["edge-2", "edge-1"] {
        let (status, reason) = renew(&cert2, &key2, node, &csr_b);
        assert_eq!(status, 403, "NodeName {node}: {}", body(&reason));
        let reason = body(&reason);
        assert!(
            reason.contains("\"edge-1\"") && reason.contains("\"edge-2\""),
            "{reason}"
        );
    }

    // An expired certificate signed by the CA: refused, and told to join again.
    let (key_old, csr_old) = key_and_csr("edge-1");
    let old = expired_cert(&data, "edge-1", &key_old);
    let (status, reason) = renew(&old, &key_old, "edge-1", &csr_old);
    let reason = body(&reason);
    assert_eq!(status, 401, "{reason}");
    assert!(reason.contains("expired"), "{reason}");
    assert!(reason.contains("edgecore join --token"), "{reason}");

    // A certificate from another CA, for the same node name.
    let other = tempfile::tempdir().unwrap();
    let other_ca = control::pki::certs::Ca::load_or_create(other.path()).unwrap();
    let (key_f, csr_f) = key_and_csr("edge-1");
    let foreign = other_ca.sign_csr("edge-1", &csr_f, 30).unwrap();
    let (_, csr) = key_and_csr("edge-1");
    let (status, reason) = renew(&foreign, &key_f, "edge-1", &csr);
    let reason = body(&reason);
    assert_eq!(status, 401, "{reason}");
    assert!(reason.contains("not signed by this cloud's CA"), "{reason}");

    // The hub's server certificate is signed by the CA but is no edge's.
    let hub_cert = CertificateDer::from_pem_file(data.join("certs/server.crt")).unwrap();
    let hub_key = PrivateKeyDer::from_pem_file(data.join("certs/server.key")).unwrap();
    let cfg = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.clone())).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let c = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![hub_cert], hub_key)
            .unwrap();
        std::sync::Arc::new(c)
    };
    let (_, csr) = key_and_csr("cloudcore");
    let (status, reason) =
        request(&addr, &cfg, "/edge.crt", &[("NodeName", "cloudcore")], &csr).unwrap();
    let reason = body(&reason);
    assert_eq!(status, 401, "{reason}");
    assert!(reason.contains("not an edge certificate"), "{reason}");

    // Neither a token nor a certificate.
    let (_, csr) = key_and_csr("edge-1");
    let (status, reason) = request(
        &addr,
        &verified,
        "/edge.crt",
        &[("NodeName", "edge-1")],
        &csr,
    )
    .unwrap();
    assert_eq!(status, 401, "{}", body(&reason));

    // The server kept serving and logged why it refused.
    assert_eq!(
        request(&addr, &verified, "/ca.crt", &[], b"").unwrap().0,
        200
    );
    let log = cloud.log();
    assert!(log.contains("renewed a certificate"), "{log}");
    assert!(log.contains("not signed by this cloud's CA"), "{log}");
}
