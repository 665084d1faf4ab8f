//! A cloud that answers the handshake with garbage: edgecore closes the
//! connection, reconnects with backoff, and keeps serving its store.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use support::{Edge, edge_config, http_get, pki, server_config, wait_for};

#[test]
fn garbage_from_the_cloud_closes_the_link_and_the_edge_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("pki"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let cloud = listener.local_addr().unwrap().to_string();
    let config = server_config(&pki);
    let garbage_sent = Arc::new(AtomicUsize::new(0));
    let count = garbage_sent.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { continue };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            // Wait for the edge's Hello, then answer with junk that starts
            // like a frame and claims a huge body, then plain noise.
            let mut buf = [0u8; 4096];
            if tls.read(&mut buf).is_err() {
                continue;
            }
            let mut junk = b"AP\x01\x00\xff\xff\xff\x7f".to_vec();
            junk.extend((0..2000u32).map(|i| (i * 7919 % 251) as u8));
            if tls.write_all(&junk).and_then(|_| tls.flush()).is_ok() {
                count.fetch_add(1, Ordering::SeqCst);
            }
            // The edge must hang up by itself.
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest);
        }
    });
    let mut edge = Edge::start(&edge_config(dir.path(), &pki, &cloud));
    wait_for(30, "three rounds of garbage and reconnection", || {
        garbage_sent.load(Ordering::SeqCst) >= 3
    });
    assert!(edge.child.try_wait().unwrap().is_none(), "edgecore exited");
    let (status, body) = http_get(edge.metaserver, "/api/v1/pods");
    assert_eq!(status, 200);
    assert!(body.contains("\"kind\":\"PodList\""), "{body}");
}
