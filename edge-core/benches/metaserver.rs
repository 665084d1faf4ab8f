//! The MetaServer's budgets, in process, over real sockets and a real LMDB
//! store: the latency of a list of 10,000 pods with a label selector that
//! matches 10 (and of the whole list beside it), the time from a commit
//! to its event at each of 50 watchers, and resident memory per open
//! watcher (1,000 idle watches).
//!
//! `cargo bench -p edge-core --bench metaserver`; run by `cargo test`
//! (without `--bench`) it does the same on 200 pods, 5 watchers and 20
//! idle watches, and checks that every figure was measured.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edge_core::metaserver::{Access, PodStatuses, Source, Watches, serve};
use edge_core::store::{DEFAULT_MAP_SIZE, Store};
use futures_lite::StreamExt as _;
use schema::{Header, Message, Route};

struct Scale {
    pods: u64,
    lists: usize,
    watchers: usize,
    changes: usize,
    idle_watches: usize,
}

fn pod(i: u64, rv: u64) -> Message {
    let name = format!("pod-{i:05}");
    // One pod in a thousand is a needle.
    let app = if i % 1000 == 7 { "needle" } else { "hay" };
    let content = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"bench","uid":"u-{i}","labels":{{"app":"{app}","tier":"edge"}}}},"spec":{{"nodeName":"edge-1","containers":[{{"name":"app","image":"registry.example/app:1.2.3"}}]}}}}"#
    );
    Message {
        header: Header {
            id: format!("m-{rv}"),
            resource_version: rv,
            seq: rv,
            ..Header::default()
        },
        route: Route {
            source: "edgecontroller".into(),
            group: "resource".into(),
            operation: "update".into(),
            resource: format!("bench/pod/{name}"),
            ..Route::default()
        },
        content: content.into_bytes(),
    }
}

/// Starts a MetaServer on its own monoio thread over `store`; changes sent
/// on the returned channel are committed there and published to its
/// watches, as the daemon does.
fn start(store: Store) -> (SocketAddr, futures_channel::mpsc::UnboundedSender<Message>) {
    let (tx, mut rx) = futures_channel::mpsc::unbounded::<Message>();
    let (addr_tx, addr_rx) = mpsc::channel();
    std::thread::spawn(move || {
        edge_core::daemon::block_on(async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let watches = Rc::new(RefCell::new(Watches::default()));
            let source = Source {
                access: Access::default(),
                log_root: String::new(),
                store: store.clone(),
                watches: watches.clone(),
                statuses: Rc::new(RefCell::new(PodStatuses::default())),
                exec: None,
            };
            monoio::spawn(serve(listener, source));
            while let Some(m) = rx.next().await {
                let seq = m.header.seq;
                let committed = store.commit([&m], seq, None).unwrap();
                watches.borrow_mut().publish(&committed.changes);
            }
        })
        .unwrap();
    });
    (addr_rx.recv().unwrap(), tx)
}

/// GETs `path`: the response's length and how many pods it holds.
fn get(addr: SocketAddr, path: &str) -> (usize, usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    assert!(body.starts_with(b"HTTP/1.1 200"), "{path}");
    let pods = body.windows(7).filter(|w| w == b"\"uid\":\"").count();
    (body.len(), pods)
}

fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    (at(0.5), at(0.99))
}

fn timed(n: usize, mut f: impl FnMut()) -> (f64, f64) {
    let ms = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    percentiles(ms)
}

/// Opens a watch from `rv`; the stream, past the response head.
fn watch(addr: SocketAddr, rv: u64) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    let path = format!("/api/v1/namespaces/bench/pods?watch=true&resourceVersion={rv}");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 2 {
        line.clear();
    }
    r
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let scale = if bench {
        Scale {
            pods: 10_000,
            lists: 200,
            watchers: 50,
            changes: 200,
            idle_watches: 1000,
        }
    } else {
        Scale {
            pods: 200,
            lists: 5,
            watchers: 5,
            changes: 5,
            idle_watches: 20,
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DEFAULT_MAP_SIZE).unwrap();
    let all: Vec<Message> = (0..scale.pods).map(|i| pod(i, i + 1)).collect();
    store.commit(&all, scale.pods, None).unwrap();
    let (addr, changes) = start(store);

    let selected = "/api/v1/namespaces/bench/pods?labelSelector=app%3Dneedle";
    let needles = (scale.pods / 1000 + u64::from(scale.pods % 1000 > 7)) as usize;
    let (p50, p99) = timed(scale.lists, || {
        assert_eq!(get(addr, selected).1, needles);
    });
    println!(
        "list of {} pods, a selector matching {needles}: p50 {p50:.2} ms, p99 {p99:.2} ms",
        scale.pods
    );
    let mut bytes = 0;
    let (p50, p99) = timed(scale.lists.min(50), || {
        let (len, pods) = get(addr, "/api/v1/namespaces/bench/pods");
        assert_eq!(pods as u64, scale.pods);
        bytes = len;
    });
    println!(
        "list of all {} pods ({} KiB): p50 {p50:.2} ms, p99 {p99:.2} ms",
        scale.pods,
        bytes / 1024
    );

    // Fan-out: each change is timed until the last watcher has its event.
    let (seen_tx, seen_rx) = mpsc::channel::<(usize, Instant)>();
    for w in 0..scale.watchers {
        let mut r = watch(addr, scale.pods);
        let seen = seen_tx.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line.contains("\"MODIFIED\"") && seen.send((w, Instant::now())).is_err() {
                    return;
                }
                line.clear();
            }
        });
    }
    let (mut last, mut each) = (Vec::new(), Vec::new());
    for c in 0..scale.changes as u64 {
        let rv = scale.pods + 1 + c;
        let sent = Instant::now();
        changes.unbounded_send(pod(c % scale.pods, rv)).unwrap();
        let mut slowest = Duration::ZERO;
        for _ in 0..scale.watchers {
            let (_, at) = seen_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("every watcher hears of the change");
            let d = at - sent;
            each.push(d.as_secs_f64() * 1000.0);
            slowest = slowest.max(d);
        }
        last.push(slowest.as_secs_f64() * 1000.0);
    }
    let (p50, p99) = percentiles(last);
    let (e50, e99) = percentiles(each);
    println!(
        "commit → event at all {} watchers: p50 {p50:.2} ms, p99 {p99:.2} ms (each watcher: p50 {e50:.2} ms, p99 {e99:.2} ms)",
        scale.watchers
    );

    // Memory per open watch, idle.
    let before = rss_kib();
    let idle: Vec<BufReader<TcpStream>> = (0..scale.idle_watches)
        .map(|_| watch(addr, scale.pods + scale.changes as u64 + 1))
        .collect();
    let after = rss_kib();
    println!(
        "{} idle watches: resident {before} → {after} KiB, {:.1} KiB per watch",
        idle.len(),
        (after.saturating_sub(before)) as f64 / idle.len() as f64
    );
}
