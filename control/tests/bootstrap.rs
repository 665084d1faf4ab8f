//! Certificate bootstrap over real HTTPS with a real rustls client, as an
//! edge does it: fetch /ca.crt without verification, check its hash against
//! the token, then ask /edge.crt with the CA verified. Forged and expired
//! tokens, a CSR for another node and garbage are refused.

mod support;

use support::https::{client, csr, request, token};
use x509_parser::prelude::*;

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
    let other_ca = control::pki::certs::Ca::load_or_create(other.path()).unwrap();
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
    let tokens = control::pki::token::Tokens::load(&data, &ca).unwrap();
    let expired = tokens.issue(clock::unix_ms() / 1000 - 120, 60);
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
