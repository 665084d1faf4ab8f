//! The certificate bootstrap endpoint, KubeEdge-compatible, over HTTPS:
//! `GET /ca.crt` (the CA, DER), `GET /edge.crt` (`NodeName: <node>`, body =
//! PKCS#10 CSR in DER → the signed certificate in DER) and `GET
//! /node/{name}` (the node's JSON, or 404).
//!
//! `/edge.crt` is authenticated in one of two ways. First join: with
//! `Authorization: Bearer <token>` (401 bad token, 403 CN ≠ NodeName, 400
//! bad CSR). Renewal: with no token, over mutual TLS with the node's
//! current certificate, which must be an edge certificate signed by the CA
//! and still valid (401 otherwise, with the reason); the CSR's CN and
//! NodeName, if given, must be the node that certificate names (403). The
//! TLS server asks for a client certificate without requiring one; see
//! [`super::client_auth`].
//!
//! A few lines of HTTP/1.1 over `httparse` rather than a web framework:
//! three routes, one request per connection (`Connection: close`), bounded
//! headers and body, a deadline per connection.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::certs::{Ca, SignError};
use super::client_auth::{EdgeCerts, OptionalClientCert};
use super::token::Tokens;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 << 10;
/// Largest body (a CSR is well under 2 KiB).
const MAX_BODY: usize = 64 << 10;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// Time a connection has to send its request and take the answer.
const DEADLINE: Duration = Duration::from_secs(10);

/// What the endpoint serves.
#[derive(Debug)]
pub struct Bootstrap {
    pub ca: Ca,
    /// Checks the client certificates of renewals against `ca`.
    pub edge_certs: EdgeCerts,
    pub tokens: Tokens,
    /// Lifetime of edge certificates, days.
    pub cert_days: u32,
    /// Edge nodes' JSON, for `/node/{name}`.
    pub nodes: RwLock<BTreeMap<String, Arc<[u8]>>>,
}

/// An HTTP answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

fn text(status: u16, msg: impl Into<String>) -> Response {
    let mut body = msg.into().into_bytes();
    body.push(b'\n');
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body,
    }
}

/// A parsed request.
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client certificate chain the TLS peer proved, if any.
    pub peer_certs: Vec<CertificateDer<'static>>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Bootstrap {
    /// Answers one request; `peer` is for logs.
    pub fn handle(&self, req: &Request, peer: &str, now_s: u64) -> Response {
        if req.method != "GET" && req.method != "POST" {
            return text(405, "method not allowed");
        }
        match req.path.as_str() {
            "/ca.crt" => Response {
                status: 200,
                content_type: "application/octet-stream",
                body: self.ca.der().to_vec(),
            },
            "/edge.crt" => self.edge_cert(req, peer, now_s),
            p => match p.strip_prefix("/node/") {
                Some(name) => match self.nodes.read().ok().and_then(|n| n.get(name).cloned()) {
                    Some(json) => Response {
                        status: 200,
                        content_type: "application/json",
                        body: json.to_vec(),
                    },
                    None => text(404, format!("node {name:?} not found")),
                },
                None => text(404, "not found"),
            },
        }
    }

    fn edge_cert(&self, req: &Request, peer: &str, now_s: u64) -> Response {
        let node = req.header("NodeName").unwrap_or("").trim();
        let token = req
            .header("Authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim);
        match token {
            Some(token) => self.join(req, token, node, peer, now_s),
            None if req.header("Authorization").is_none() && !req.peer_certs.is_empty() => {
                self.renew(req, node, peer, now_s)
            }
            None => {
                tracing::warn!(peer, node, "certificate request without a token: 401");
                text(
                    401,
                    "missing bearer token (to join) or client certificate (to renew)",
                )
            }
        }
    }

    /// First join: authenticated by the token.
    fn join(&self, req: &Request, token: &str, node: &str, peer: &str, now_s: u64) -> Response {
        if let Err(e) = self.tokens.verify(token, now_s) {
            tracing::warn!(peer, node, "certificate request refused: {e}: 401");
            return text(401, format!("invalid token: {e}"));
        }
        if node.is_empty() {
            tracing::warn!(peer, "certificate request without a NodeName header: 400");
            return text(400, "missing NodeName header");
        }
        self.sign(node, &req.body, peer, "issued")
    }

    /// Renewal: authenticated by the client certificate, for the node it
    /// names only.
    fn renew(&self, req: &Request, node: &str, peer: &str, now_s: u64) -> Response {
        let cert_node = match self.edge_certs.node_of(&req.peer_certs, now_s) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(peer, node, "certificate renewal refused: {e}: 401");
                return text(401, e.to_string());
            }
        };
        if !node.is_empty() && node != cert_node {
            let e = format!(
                "the client certificate is for node {cert_node:?}, \
                 but the request is for node {node:?}"
            );
            tracing::warn!(peer, node, "certificate renewal refused: {e}: 403");
            return text(403, e);
        }
        self.sign(&cert_node, &req.body, peer, "renewed")
    }

    /// Signs `csr` for `node`; `what` names the act in the log.
    fn sign(&self, node: &str, csr: &[u8], peer: &str, what: &str) -> Response {
        match self.ca.sign_csr(node, csr, self.cert_days) {
            Ok(der) => {
                tracing::info!(
                    peer,
                    node,
                    "{what} a certificate for {} days",
                    self.cert_days
                );
                Response {
                    status: 200,
                    content_type: "application/octet-stream",
                    body: der,
                }
            }
            Err(e @ SignError::NameMismatch { .. }) => {
                tracing::warn!(peer, node, "certificate request refused: {e}: 403");
                text(403, e.to_string())
            }
            Err(e @ SignError::BadCsr(_)) => {
                tracing::warn!(peer, node, "certificate request refused: {e}: 400");
                text(400, e.to_string())
            }
            Err(e) => {
                tracing::error!(peer, node, "certificate request failed: {e}: 500");
                text(500, e.to_string())
            }
        }
    }
}

/// A TLS acceptor for the server certificate and key (PEM files), asking
/// for an optional client certificate (judged later by `edge_certs`).
pub fn acceptor(cert: &Path, key: &Path, edge_certs: &EdgeCerts) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(OptionalClientCert::new(edge_certs))
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<Bootstrap>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Past the limit, connections wait in the listen backlog.
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("bootstrap accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let peer = peer.to_string();
            let work = async {
                let mut tls = acceptor
                    .accept(tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                let peer_certs = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                    .unwrap_or_default();
                let resp = match read_request(&mut tls).await {
                    Ok(mut req) => {
                        req.peer_certs = peer_certs;
                        state.handle(&req, &peer, clock::unix_ms() / 1000)
                    }
                    Err(resp) => resp,
                };
                let head = format!(
                    "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    resp.status,
                    reason(resp.status),
                    resp.content_type,
                    resp.body.len()
                );
                tls.write_all(head.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                tls.write_all(&resp.body).await.map_err(|e| e.to_string())?;
                tls.shutdown().await.map_err(|e| e.to_string())
            };
            match tokio::time::timeout(DEADLINE, work).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(peer, "bootstrap connection: {e}"),
                Err(_) => tracing::debug!(peer, "bootstrap connection timed out"),
            }
        });
    }
}

/// Reads one request; an error is the answer to send.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Result<Request, Response> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|_| text(400, "read failed"))?;
        if n == 0 {
            return Err(text(400, "connection closed mid-request"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let mut out = Request {
                    method: req.method.unwrap_or("").to_owned(),
                    path: req.path.unwrap_or("").to_owned(),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                    body: Vec::new(),
                    peer_certs: Vec::new(),
                };
                let len: usize = match out.header("Content-Length") {
                    Some(v) => v
                        .trim()
                        .parse()
                        .map_err(|_| text(400, "bad Content-Length"))?,
                    None => 0,
                };
                if len > MAX_BODY {
                    return Err(text(413, format!("body over {MAX_BODY} bytes")));
                }
                let mut body = buf[head_len..].to_vec();
                while body.len() < len {
                    let n = s
                        .read(&mut chunk)
                        .await
                        .map_err(|_| text(400, "read failed"))?;
                    if n == 0 {
                        return Err(text(400, "connection closed mid-body"));
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(len);
                out.body = body;
                return Ok(out);
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(text(431, "request head too large")),
            Err(e) => return Err(text(400, format!("bad request: {e}"))),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}
