//! Running one probe: exec in the container through the CRI, an HTTP(S)
//! GET or a TCP connection to the pod, within the probe's timeout.

use std::sync::Arc;
use std::time::Duration;

use edged::{ProbeAction, ProbeRequest};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::Cri;

/// Whether the probe succeeded; a timeout or an error is a failure.
pub(crate) async fn run(mut cri: Cri, req: &ProbeRequest) -> bool {
    let timeout = Duration::from_millis(req.timeout_ms);
    let outcome = tokio::time::timeout(timeout, async {
        match &req.action {
            ProbeAction::Exec { command } => {
                let secs = req.timeout_ms.div_ceil(1000);
                cri.exec_sync(&req.container_id, command, secs)
                    .await
                    .map(|code| code == 0)
                    .map_err(|e| e.to_string())
            }
            ProbeAction::Tcp { host, port } => {
                Ok(TcpStream::connect((host.as_str(), *port)).await.is_ok())
            }
            ProbeAction::Http {
                https,
                host,
                port,
                path,
                headers,
            } => Ok(http_get(*https, host, *port, path, headers).await),
        }
    })
    .await;
    match outcome {
        Ok(Ok(ok)) => ok,
        Ok(Err(why)) => {
            tracing::debug!(pod = %req.pod, container = %req.container, "probe failed: {why}");
            false
        }
        Err(_) => false,
    }
}

/// A GET whose status is 200–399, as the kubelet's HTTP prober counts it;
/// over TLS for `https`, the server's certificate not verified (as the
/// kubelet's).
async fn http_get(
    https: bool,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> bool {
    let Ok(tcp) = TcpStream::connect((host, port)).await else {
        return false;
    };
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/edged\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    if !https {
        return status_ok(tcp, request.as_bytes()).await;
    }
    let Ok(config) = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = config
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::tls::AnyServer))
        .with_no_client_auth();
    let Ok(name) = ServerName::try_from(host.to_owned()) else {
        return false;
    };
    match tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        Ok(tls) => status_ok(tls, request.as_bytes()).await,
        Err(_) => false,
    }
}

/// Sends `request` and reads the status line: "HTTP/1.1 200 OK".
async fn status_ok<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &[u8]) -> bool {
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut head = [0u8; 64];
    let Ok(n) = stream.read(&mut head).await else {
        return false;
    };
    let line = String::from_utf8_lossy(&head[..n]);
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok());
    code.is_some_and(|c| (200..400).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on loopback that answers every connection with `status`,
    /// over TLS with a self-signed certificate when `tls`.
    async fn server(status: u16, tls: bool) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                let mut buf = [0u8; 1024];
                if tls {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        continue;
                    };
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(reply.as_bytes()).await;
                    let _ = s.shutdown().await;
                } else {
                    let mut s = tcp;
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(reply.as_bytes()).await;
                }
            }
        });
        port
    }

    #[tokio::test]
    async fn http_and_https_probes_count_200_to_399_as_success() {
        for tls in [false, true] {
            for (status, ok) in [(200, true), (302, true), (404, false), (500, false)] {
                let port = server(status, tls).await;
                assert_eq!(
                    http_get(tls, "127.0.0.1", port, "/healthz", &[]).await,
                    ok,
                    "{status} tls={tls}"
                );
            }
        }
        // Nothing listening is a failure, not an error.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(!http_get(false, "127.0.0.1", port, "/", &[]).await);
    }
}
