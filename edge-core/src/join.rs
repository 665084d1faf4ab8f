//! Certificate bootstrap (`edgecore join`) and rotation.
//!
//! Join fetches the cloud's CA from `/ca.crt` without verification, checks
//! its SHA-256 against the hash in the token (refusing on mismatch), makes a
//! key and a CSR whose CN is the node name, asks `/edge.crt` for a
//! certificate over HTTPS verified with that CA, and stores CA, key and
//! certificate as PEM files. Join runs once, before the runtime starts, so
//! its small HTTPS client is blocking rustls over a std `TcpStream`.
//!
//! Renewal ([`renew`]) needs no token, as in KubeEdge: it asks `/edge.crt`
//! over mutual TLS, authenticated by the node's current certificate, for a
//! new certificate with the same CN. The token is used once, by join, and
//! is not kept. A node whose certificate has already expired cannot renew:
//! [`renew`] says so before trying ([`JoinError::CertificateExpired`]), and
//! the node joins again with a new token.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::tls::{AnyServer, pem_encode, provider, write_file_atomic};

/// Most bytes read from the bootstrap server.
const MAX_RESPONSE: usize = 1 << 20;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why join or renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the token is not <ca-hash>.<secret> with a 64-digit hex hash")]
    BadToken,
    #[error("the CA from {server} does not match the token (SHA-256 {actual})")]
    CaMismatch { server: String, actual: String },
    #[error("cannot reach {server}: {source}")]
    Connect {
        server: String,
        source: std::io::Error,
    },
    #[error("TLS with {server}: {detail}")]
    Tls { server: String, detail: String },
    #[error("{path} answered {status}: {body}")]
    Http {
        path: String,
        status: u16,
        body: String,
    },
    #[error("bad HTTP response from {server}: {detail}")]
    Response { server: String, detail: String },
    #[error("key or CSR: {0}")]
    Key(String),
    #[error(
        "the node's certificate {} expired at {not_after}: renewal needs a valid \
         certificate; get a new token (cloudcontrol token) and run `edgecore join --token`",
        path.display()
    )]
    CertificateExpired { path: PathBuf, not_after: String },
    #[error("the node's certificate {}: {detail}", path.display())]
    Certificate { path: PathBuf, detail: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The files join writes, under the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// KubeEdge's layout under `dir`: `ca/rootCA.crt`, `certs/server.{crt,key}`.
    pub fn under(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca/rootCA.crt"),
            cert: dir.join("certs/server.crt"),
            key: dir.join("certs/server.key"),
        }
    }
}

/// Splits a join token into the CA hash and the secret.
pub fn parse_token(token: &str) -> Result<(&str, &str), JoinError> {
    let (hash, secret) = token.split_once('.').ok_or(JoinError::BadToken)?;
    let hex = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex || secret.is_empty() {
        return Err(JoinError::BadToken);
    }
    Ok((hash, secret))
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Fetches and checks the CA, then gets a certificate for `node` and writes
/// the files. `cert_server` is the bootstrap endpoint, `host:port`.
pub fn join(
    token: &str,
    cert_server: &str,
    node: &str,
    files: &CertFiles,
) -> Result<(), JoinError> {
    let (hash, _) = parse_token(token)?;
    let ca = fetch_ca(cert_server)?;
    let actual = sha256_hex(&ca);
    if !actual.eq_ignore_ascii_case(hash) {
        return Err(JoinError::CaMismatch {
            server: cert_server.to_owned(),
            actual,
        });
    }
    write(&files.ca, pem_encode("CERTIFICATE", &ca).as_bytes())?;
    request_certificate(token, cert_server, node, files)
}

/// `GET /ca.crt` without verifying the server (the token's hash does that).
pub fn fetch_ca(cert_server: &str) -> Result<Vec<u8>, JoinError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error(cert_server, e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_no_client_auth();
    let request =
        format!("GET /ca.crt HTTP/1.1\r\nHost: {cert_server}\r\nConnection: close\r\n\r\n");
    https(cert_server, config, request.as_bytes(), "/ca.crt")
}

/// Makes a new key and CSR for `node`, asks `/edge.crt` for a certificate
/// with the token (verifying the server with the CA in `files.ca`), and
/// writes key and certificate. Used by join.
pub fn request_certificate(
    token: &str,
    cert_server: &str,
    node: &str,
    files: &CertFiles,
) -> Result<(), JoinError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error(cert_server, e))?
        .with_root_certificates(roots(cert_server, files)?)
        .with_no_client_auth();
    let auth = format!("Authorization: Bearer {token}\r\n");
    edge_crt(cert_server, config, &auth, node, files)
}

/// Certificate rotation: asks `/edge.crt` for a new certificate for `node`
/// over mutual TLS with the current certificate and key in `files` (no
/// token), and replaces them on disk. Refuses, naming the way out, when
/// that certificate expired before `now_s` (Unix seconds).
pub fn renew(
    cert_server: &str,
    node: &str,
    files: &CertFiles,
    now_s: u64,
) -> Result<(), JoinError> {
    let bad = |detail: String| JoinError::Certificate {
        path: files.cert.clone(),
        detail,
    };
    let der = CertificateDer::from_pem_file(&files.cert).map_err(|e| bad(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| bad(format!("does not parse: {e}")))?;
    let not_after = cert.validity().not_after;
    if u64::try_from(not_after.timestamp()).unwrap_or(0) <= now_s {
        return Err(JoinError::CertificateExpired {
            path: files.cert.clone(),
            not_after: not_after.to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| JoinError::Certificate {
        path: files.key.clone(),
        detail: e.to_string(),
    })?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error(cert_server, e))?
        .with_root_certificates(roots(cert_server, files)?)
        .with_client_auth_cert(vec![der.clone().into_owned()], key)
        .map_err(|e| tls_error(cert_server, e))?;
    edge_crt(cert_server, config, "", node, files)
}

/// The CA in `files.ca`, to verify the bootstrap server with.
fn roots(cert_server: &str, files: &CertFiles) -> Result<rustls::RootCertStore, JoinError> {
    let ca = CertificateDer::from_pem_file(&files.ca).map_err(|e| JoinError::Tls {
        server: cert_server.to_owned(),
        detail: format!("CA {}: {e}", files.ca.display()),
    })?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| tls_error(cert_server, e))?;
    Ok(roots)
}

/// Makes a new key and a CSR for `node`, sends it to `/edge.crt` with the
/// extra header lines `auth`, and writes the new key and certificate.
fn edge_crt(
    cert_server: &str,
    config: ClientConfig,
    auth: &str,
    node: &str,
    files: &CertFiles,
) -> Result<(), JoinError> {
    let key = rcgen::KeyPair::generate().map_err(|e| JoinError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| JoinError::Key(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node);
    let csr = params
        .serialize_request(&key)
        .map_err(|e| JoinError::Key(e.to_string()))?;
    let csr = csr.der().as_ref();
    let mut request = format!(
        "GET /edge.crt HTTP/1.1\r\nHost: {cert_server}\r\n{auth}\
         NodeName: {node}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        csr.len()
    )
    .into_bytes();
    request.extend_from_slice(csr);
    let cert = https(cert_server, config, &request, "/edge.crt")?;
    write(&files.key, key.serialize_pem().as_bytes())?;
    write(&files.cert, pem_encode("CERTIFICATE", &cert).as_bytes())
}

/// When to ask for a new certificate: a point between 70% and 90% of the
/// lifetime from `not_before` to `not_after` (any unit), chosen by
/// `random` in `[0, 1)` so a fleet does not renew at once.
pub fn renewal_at(not_before: u64, not_after: u64, random: f64) -> u64 {
    let lifetime = u128::from(not_after.saturating_sub(not_before));
    let permille = 700 + (200.0 * random.clamp(0.0, 1.0)) as u128;
    not_before + (lifetime * permille / 1000) as u64
}

/// Validity of the PEM certificate at `path`, in Unix seconds.
pub fn validity(path: &Path) -> Option<(u64, u64)> {
    let der = CertificateDer::from_pem_file(path).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let v = cert.validity();
    let nb = u64::try_from(v.not_before.timestamp()).ok()?;
    let na = u64::try_from(v.not_after.timestamp()).ok()?;
    Some((nb, na))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), JoinError> {
    write_file_atomic(path, bytes).map_err(|source| JoinError::Write {
        path: path.to_owned(),
        source,
    })
}

fn tls_error(server: &str, e: impl std::fmt::Display) -> JoinError {
    JoinError::Tls {
        server: server.to_owned(),
        detail: e.to_string(),
    }
}

/// One HTTPS request (`Connection: close`); the body of a 200 answer.
fn https(
    server: &str,
    config: ClientConfig,
    request: &[u8],
    path: &str,
) -> Result<Vec<u8>, JoinError> {
    let name = ServerName::try_from(crate::config::host_of(server).to_owned())
        .map_err(|e| tls_error(server, e))?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| tls_error(server, e))?;
    let connect = |source| JoinError::Connect {
        server: server.to_owned(),
        source,
    };
    let mut sock = TcpStream::connect(server).map_err(connect)?;
    sock.set_read_timeout(Some(IO_TIMEOUT)).map_err(connect)?;
    sock.set_write_timeout(Some(IO_TIMEOUT)).map_err(connect)?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(request).map_err(|e| tls_error(server, e))?;
    let mut response = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if response.len() + n > MAX_RESPONSE => {
                return Err(bad_response(server, "response over 1 MiB"));
            }
            Ok(n) => response.extend_from_slice(&buf[..n]),
            // A server that closes without close_notify still sent it all.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(tls_error(server, e)),
        }
    }
    let (status, body) = parse_response(&response).map_err(|d| bad_response(server, d))?;
    if status != 200 {
        return Err(JoinError::Http {
            path: path.to_owned(),
            status,
            body: String::from_utf8_lossy(&body).chars().take(200).collect(),
        });
    }
    Ok(body)
}

fn bad_response(server: &str, detail: &str) -> JoinError {
    JoinError::Response {
        server: server.to_owned(),
        detail: detail.to_owned(),
    }
}

/// Status and body of a whole HTTP/1.1 response (length, chunked or
/// read to the end).
fn parse_response(bytes: &[u8]) -> Result<(u16, Vec<u8>), &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("truncated response head"),
        Err(_) => return Err("unparsable response head"),
    };
    let status = response.code.ok_or("no status")?;
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &bytes[head..];
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return dechunk(rest).map(|b| (status, b));
    }
    let body = match header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(len) if len <= rest.len() => rest[..len].to_vec(),
        Some(_) => return Err("body shorter than its Content-Length"),
        None => rest.to_vec(),
    };
    Ok((status, body))
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk")?;
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| "bad chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("truncated chunk");
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_70_and_90_percent() {
        let (nb, na) = (1_000, 1_000 + 1_000_000);
        assert_eq!(renewal_at(nb, na, 0.0), nb + 700_000);
        assert_eq!(renewal_at(nb, na, 0.5), nb + 800_000);
        let late = renewal_at(nb, na, 0.999_999);
        assert!((nb + 899_000..=nb + 900_000).contains(&late), "{late}");
        // Out-of-range randomness is clamped, a backwards validity is "now".
        assert_eq!(renewal_at(nb, na, 7.0), nb + 900_000);
        assert_eq!(renewal_at(nb, na, -1.0), nb + 700_000);
        assert_eq!(renewal_at(na, nb, 0.3), na);
        // A year in seconds, over many random draws, stays in the window.
        let year = 365 * 86_400;
        for i in 0..100 {
            let at = renewal_at(0, year, f64::from(i) / 100.0);
            assert!(at >= year * 7 / 10 && at <= year * 9 / 10);
        }
    }

    #[test]
    fn an_expired_certificate_asks_for_a_new_token_before_any_request() {
        let dir = tempfile::tempdir().unwrap();
        let files = CertFiles::under(dir.path());
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "edge-1");
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let cert = p.self_signed(&key).unwrap();
        write(&files.cert, cert.pem().as_bytes()).unwrap();
        write(&files.key, key.serialize_pem().as_bytes()).unwrap();
        // Nothing listens on port 1: an attempt would fail to connect.
        let now = 1_700_000_000;
        let err = renew("127.0.0.1:1", "edge-1", &files, now).unwrap_err();
        assert!(matches!(err, JoinError::CertificateExpired { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("edgecore join --token"), "{text}");
        assert!(text.contains("2021"), "{text}");
        // Valid at that instant: past the check (then the missing CA stops it).
        let err = renew("127.0.0.1:1", "edge-1", &files, 1_600_000_000).unwrap_err();
        assert!(
            !matches!(err, JoinError::CertificateExpired { .. }),
            "{err}"
        );
    }

    #[test]
    fn tokens_are_checked() {
        let hash = sha256_hex(b"ca");
        assert_eq!(hash.len(), 64);
        let token = format!("{hash}.secret.part");
        assert_eq!(parse_token(&token).unwrap(), (hash.as_str(), "secret.part"));
        for bad in [
            "",
            "nohash",
            "abc.def",
            &format!("{hash}."),
            &format!("{}x.s", &hash[1..]),
        ] {
            assert!(
                matches!(parse_token(bad), Err(JoinError::BadToken)),
                "{bad}"
            );
        }
    }

    #[test]
    fn responses_by_length_chunked_and_garbage() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(parse_response(r).unwrap(), (200, b"abc".to_vec()));
        let r =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n";
        assert_eq!(parse_response(r).unwrap(), (200, b"abc".to_vec()));
        let r = b"HTTP/1.1 401 Unauthorized\r\n\r\nno";
        assert_eq!(parse_response(r).unwrap(), (401, b"no".to_vec()));
        assert!(parse_response(b"\x00\x01garbage\r\n\r\n").is_err());
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\nab";
        assert!(parse_response(r).is_err());
    }
}
