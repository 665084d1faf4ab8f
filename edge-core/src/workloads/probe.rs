//! Running one probe: exec in the container through the CRI, an HTTP GET
//! or a TCP connection to the pod, within the probe's timeout.

use std::time::Duration;

use edged::{ProbeAction, ProbeRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
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
            ProbeAction::Http { https: true, .. } => {
                Err("https probes are not supported yet".to_owned())
            }
            ProbeAction::Http {
                host,
                port,
                path,
                headers,
                ..
            } => Ok(http_get(host, *port, path, headers).await),
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

/// A GET whose status is 200–399, as the kubelet's HTTP prober counts it.
async fn http_get(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> bool {
    let Ok(mut stream) = TcpStream::connect((host, port)).await else {
        return false;
    };
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/edged\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    // The status line is all that is read: "HTTP/1.1 200 OK".
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
