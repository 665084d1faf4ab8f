//! The operations endpoint: `GET /metrics` (Prometheus text) and
//! `GET /healthz`, served by one plain thread so a busy shard never delays a
//! scrape and a scrape never touches a shard.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::metrics::{ShardMetrics, render};

/// Largest request head read.
const MAX_REQUEST: usize = 8 << 10;

/// Serves until `stop` is set (checked after each request and every
/// 200 ms while idle).
pub fn serve(listener: TcpListener, shards: Arc<[ShardMetrics]>, stop: Arc<AtomicBool>) {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::error!("metrics endpoint: {e}");
        return;
    }
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                failing = false;
                if let Err(e) = answer(stream, &shards) {
                    tracing::debug!("metrics request: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                failing = false;
                // Idle: nothing to wait on but the listener and the flag.
                std::thread::park_timeout(Duration::from_millis(200));
            }
            Err(e) => {
                // Out of descriptors, typically: Linux fails accept with
                // EMFILE before it looks for a connection, so retrying at
                // once would spin. Say it once and wait as when idle.
                if !failing {
                    tracing::warn!("metrics endpoint accept: {e}");
                }
                failing = true;
                std::thread::park_timeout(Duration::from_millis(200));
            }
        }
    }
}

fn answer(mut stream: TcpStream, shards: &[ShardMetrics]) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let path = loop {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or("");
                let path = request.path.unwrap_or("");
                if method != "GET" {
                    break None;
                }
                break Some(path.split('?').next().unwrap_or("").to_owned());
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            _ => break None,
        }
    };
    let (status, body) = match path.as_deref() {
        Some("/metrics") => {
            let refs: Vec<&ShardMetrics> = shards.iter().collect();
            ("200 OK", render(&refs))
        }
        Some("/healthz") => {
            let down: Vec<usize> = (0..shards.len())
                .filter(|&i| !shards[i].running.load(Ordering::Relaxed))
                .collect();
            if down.is_empty() {
                ("200 OK", "ok\n".to_owned())
            } else {
                (
                    "503 Service Unavailable",
                    format!("shards not running: {down:?}\n"),
                )
            }
        }
        Some(_) => ("404 Not Found", "not found\n".to_owned()),
        None => ("400 Bad Request", "bad request\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    Ok(())
}
