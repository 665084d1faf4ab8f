//! `cloudhub` as a real process: real sockets, real TLS, real ring files.
//! Edges are the hub-core `Link` driven over rustls client connections; the
//! control side of the rings is played by the test (or by a child process
//! that is killed).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hub_core::link::LinkEvent;
use schema::fb::CloseReason;
use schema::records::{self, DownRecord, UpRecord};
use support::{Edge, HubProcess, Pki, collect_until, downstream, metric_value, pump_all};

fn node_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("edge-{i:02}")).collect()
}

#[test]
fn edges_on_every_shard_exchange_messages_with_the_rings() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let hub = HubProcess::start(dir.path(), Some(&pki), 2, "");
    let addr = hub.tls.unwrap();
    let nodes = node_names(24);
    let mut edges: Vec<Edge> = nodes
        .iter()
        .map(|n| Edge::tls(addr, pki.client(n), n, 0))
        .collect();
    pump_all(&mut edges, "every link up", Edge::is_up);

    // Each shard holds exactly the nodes that hash to it, whichever shard
    // the kernel gave the connection to; with 24 connections some were
    // accepted on the other shard and handed over.
    let (_, body) = hub.get("/metrics");
    for shard in 0..2 {
        let expected = nodes.iter().filter(|n| hub.owner(n) == shard).count() as u64;
        assert_eq!(
            metric_value(&body, "apiary_connected_nodes", Some(shard)),
            expected,
            "{body}"
        );
    }
    let handed = metric_value(&body, "apiary_handoffs_in_total", None);
    assert!(handed > 0, "no connection was handed over:\n{body}");
    assert_eq!(
        handed,
        metric_value(&body, "apiary_handoffs_out_total", None)
    );

    // Downstream: one object per node, written into its shard's ring.
    let rings: Vec<shm::RingFile> = (0..2).map(|s| hub.control(s)).collect();
    for node in &nodes {
        let record = downstream(node, &format!("cm-{node}"), 5, node.as_bytes());
        rings[hub.owner(node)].push_and_wake(&record).unwrap();
    }
    pump_all(&mut edges, "the downstream object", |e| {
        !e.received.is_empty()
    });
    for e in &edges {
        assert_eq!(e.object_names(), vec![format!("cm-{}", e.node)]);
        assert_eq!(e.received[0].content, e.node.as_bytes());
        assert_eq!(e.received[0].header.resource_version, 5);
    }
    // Each edge got its object in a send of one frame taken from the ring
    // turn: the routing latency histogram counts those sends, and at most
    // one welcome and one batch frame went to each edge.
    let latency_count = "apiary_route_latency_seconds_count";
    let direction = |body: &str, d: &str| {
        body.lines()
            .filter(|l| l.starts_with(latency_count) && l.contains(&format!("direction=\"{d}\"")))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum::<u64>()
    };
    let (_, body) = hub.get("/metrics");
    let routed = direction(&body, "downstream");
    assert_eq!(routed, metric_value(&body, latency_count, None), "{body}");
    assert!(
        routed >= 1 && routed <= nodes.len() as u64,
        "routed sends {routed}:\n{body}"
    );
    let inf = body
        .lines()
        .filter(|l| {
            l.starts_with("apiary_route_latency_seconds_bucket{") && l.contains("le=\"+Inf\"")
        })
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum::<u64>();
    assert_eq!(inf, routed, "the +Inf bucket holds every value:\n{body}");
    let sends = metric_value(&body, "apiary_sends_total", None);
    let frames = metric_value(&body, "apiary_frames_out_total", None);
    assert!(sends >= nodes.len() as u64, "{body}");
    assert!(
        frames >= 2 * nodes.len() as u64 && frames <= 3 * nodes.len() as u64,
        "{body}"
    );

    // Upstream: each edge sends one message; it reaches its shard's ring.
    for e in &mut edges {
        let content = format!("status of {}", e.node);
        e.send_upstream(1, content.as_bytes());
    }
    let mut seen: Vec<(usize, UpRecord)> = Vec::new();
    let upstream = |seen: &[(usize, UpRecord)]| {
        seen.iter()
            .filter(|(_, r)| matches!(r, UpRecord::Upstream { .. }))
            .count()
    };
    // Keep the edges pumping while collecting (they must send).
    let deadline = Instant::now() + Duration::from_secs(20);
    while upstream(&seen) < nodes.len() {
        assert!(Instant::now() < deadline, "upstream missing: {seen:#?}");
        for e in &mut edges {
            e.pump();
        }
        for (shard, ring) in rings.iter().enumerate() {
            seen.extend(support::drain(ring).into_iter().map(|r| (shard, r)));
        }
    }
    let mut upstream_of: BTreeMap<String, usize> = BTreeMap::new();
    for (shard, record) in &seen {
        let node = match record {
            UpRecord::Upstream {
                node_id, message, ..
            } => {
                assert_eq!(message.content, format!("status of {node_id}").as_bytes());
                assert_eq!(message.header.seq, 1);
                *upstream_of.entry(node_id.clone()).or_default() += 1;
                node_id
            }
            UpRecord::Connected { node_id, .. } => node_id,
            UpRecord::Delivered {
                node_id, objects, ..
            } => {
                assert_eq!(objects.len(), 1);
                assert_eq!(objects[0].key.name, format!("cm-{node_id}"));
                assert_eq!(objects[0].resource_version, 5);
                node_id
            }
            other => panic!("unexpected record {other:?}"),
        };
        assert_eq!(
            *shard,
            hub.owner(node),
            "{record:?} in the ring of shard {shard}"
        );
    }
    assert!(upstream_of.values().all(|&n| n == 1), "{upstream_of:?}");
    assert_eq!(upstream_of.len(), nodes.len());
    // Each upstream message was timed from its socket read to its ring push.
    hub.wait_metrics("upstream routing latency", |body| {
        direction(body, "upstream") >= nodes.len() as u64
    });
    let (_, body) = hub.get("/metrics");
    assert_eq!(direction(&body, "upstream"), nodes.len() as u64, "{body}");

    // The control side commits the upstream messages: each edge hears it.
    for node in &nodes {
        let record = records::to_bytes(&DownRecord::Committed {
            node_id: node.clone(),
            store_id: 0,
            seq: 1,
        });
        rings[hub.owner(node)].push_and_wake(&record).unwrap();
    }
    pump_all(&mut edges, "the upstream ack", |e| {
        e.events
            .iter()
            .any(|ev| matches!(ev, LinkEvent::UpstreamAcked { seq: 1 }))
    });
}

#[test]
fn upstream_records_arrive_in_the_owner_shards_ring_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let hub = HubProcess::start(dir.path(), Some(&pki), 2, "");
    let nodes = node_names(6);
    let mut edges: Vec<Edge> = nodes
        .iter()
        .map(|n| Edge::tls(hub.tls.unwrap(), pki.client(n), n, 0))
        .collect();
    pump_all(&mut edges, "every link up", Edge::is_up);
    let rings: Vec<shm::RingFile> = (0..2).map(|s| hub.control(s)).collect();
    for shard in 0..2 {
        let mut seen = Vec::new();
        let expected: BTreeSet<&String> = nodes.iter().filter(|n| hub.owner(n) == shard).collect();
        collect_until(
            &rings[shard..=shard],
            &mut seen,
            "connected records",
            |seen| {
                seen.iter()
                    .filter(|r| matches!(r, UpRecord::Connected { .. }))
                    .count()
                    >= expected.len()
            },
        );
        for r in &seen {
            if let UpRecord::Connected { node_id, .. } = r {
                assert!(expected.contains(node_id), "{node_id} on shard {shard}");
            }
        }
    }
}

#[test]
fn a_node_cannot_claim_another_nodes_identity() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let hub = HubProcess::start(dir.path(), Some(&pki), 2, "");
    // Certificate of edge-a, Hello for edge-b.
    let mut thief = Edge::tls(hub.tls.unwrap(), pki.client("edge-a"), "edge-b", 0);
    thief.pump_until("the refusal", |e| e.close_reason().is_some());
    assert_eq!(thief.close_reason(), Some(Some(CloseReason::Unauthorized)));
    thief.pump_until("the socket to close", |e| e.closed || !e.is_up());
    // edge-b's own certificate works, and nothing was queued for edge-a.
    let mut honest = Edge::tls(hub.tls.unwrap(), pki.client("edge-b"), "edge-b", 0);
    honest.pump_until("link up", Edge::is_up);
    hub.wait_metrics("the unauthorized close", |body| {
        metric_value(body, "apiary_closes_total", None) >= 1
            && body.contains("reason=\"unauthorized\"} 1")
    });
    // A client without a certificate does not get past TLS.
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let anonymous = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut edge = Edge::tls(
        hub.tls.unwrap(),
        std::sync::Arc::new(anonymous),
        "edge-c",
        0,
    );
    edge.pump_until("the refusal", |e| e.closed);
    assert!(!edge.is_up());
}

#[test]
fn a_reconnecting_node_resumes_without_committed_messages() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let hub = HubProcess::start(dir.path(), Some(&pki), 2, "");
    let node = "edge-resume";
    let ring = hub.control(hub.owner(node));
    let client = pki.client(node);
    let mut edge = Edge::tls(hub.tls.unwrap(), client.clone(), node, 0);
    edge.pump_until("link up", Edge::is_up);
    for i in 0..3 {
        ring.push_and_wake(&downstream(node, &format!("cm-{i}"), 1, b"v1"))
            .unwrap();
    }
    edge.pump_until("three objects", |e| e.received.len() == 3);
    let committed = edge.link.committed_seq();
    assert_eq!(committed, 3);
    // Wait until the hub has the acks: the ring reports the deliveries.
    let mut seen = Vec::new();
    collect_until(std::slice::from_ref(&ring), &mut seen, "deliveries", |s| {
        s.iter()
            .filter_map(|r| match r {
                UpRecord::Delivered { objects, .. } => Some(objects.len()),
                _ => None,
            })
            .sum::<usize>()
            == 3
    });
    drop(edge);
    // Two more objects while the node is away, then it comes back stating
    // what it committed.
    ring.push_and_wake(&downstream(node, "cm-3", 1, b"v1"))
        .unwrap();
    ring.push_and_wake(&downstream(node, "cm-0", 2, b"v2"))
        .unwrap();
    let mut edge = Edge::tls(hub.tls.unwrap(), client, node, committed);
    edge.pump_until("the two new objects", |e| e.received.len() >= 2);
    // Give a resend of old messages every chance to show up.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        edge.pump();
    }
    let got: Vec<(String, u64)> = edge
        .received
        .iter()
        .map(|m| (m.route.resource.clone(), m.header.resource_version))
        .collect();
    assert_eq!(
        got,
        vec![
            ("default/configmap/cm-3".to_owned(), 1),
            ("default/configmap/cm-0".to_owned(), 2)
        ]
    );
}

#[test]
fn the_node_limit_closes_the_socket_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let hub = HubProcess::start(dir.path(), Some(&pki), 1, "nodeLimit = 2\n");
    let addr = hub.tls.unwrap();
    let mut first: Vec<Edge> = ["edge-1", "edge-2"]
        .iter()
        .map(|n| Edge::tls(addr, pki.client(n), n, 0))
        .collect();
    pump_all(&mut first, "two links up", Edge::is_up);
    let mut third = Edge::tls(addr, pki.client("edge-3"), "edge-3", 0);
    third.pump_until("the refusal", |e| e.close_reason().is_some());
    assert_eq!(third.close_reason(), Some(Some(CloseReason::NodeLimit)));
    third.pump_until("the socket to close", |e| e.closed);
    hub.wait_metrics("the node-limit close", |b| {
        b.contains("apiary_closes_total{shard=\"0\",reason=\"node_limit\"} 1")
    });
    // The admitted nodes carry on.
    pump_all(&mut first, "links still up", Edge::is_up);
}

#[test]
fn garbage_and_stalled_handshakes_are_closed_while_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    // handshakeTimeout = 2 s (the test configuration).
    let hub = HubProcess::start(
        dir.path(),
        Some(&pki),
        2,
        "plaintext = true\nplaintextPort = 0\n",
    );
    let addr = hub.tls.unwrap();
    let started = Instant::now();
    // Stalls after the first bytes of a TLS record header.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
    // Sends garbage instead of a ClientHello.
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n\x00\xff\x13\x37garbage")
        .unwrap();
    // Garbage on the plaintext port too.
    let mut plain_garbage = TcpStream::connect(hub.plain.unwrap()).unwrap();
    plain_garbage.write_all(&[0xde; 64]).unwrap();
    // A stalled plaintext client that never sends a frame.
    let mut plain_stalled = TcpStream::connect(hub.plain.unwrap()).unwrap();

    // Meanwhile a real edge connects and gets its messages.
    let node = "edge-ok";
    let mut edge = Edge::tls(addr, pki.client(node), node, 0);
    edge.pump_until("link up", Edge::is_up);
    let ring = hub.control(hub.owner(node));
    ring.push_and_wake(&downstream(node, "cm", 1, b"x"))
        .unwrap();
    edge.pump_until("its message", |e| e.received.len() == 1);

    for (name, socket) in [
        ("garbage", &mut garbage),
        ("plaintext garbage", &mut plain_garbage),
    ] {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        // An alert or a Close frame may come first; then the end.
        let r = socket.read_to_end(&mut rest);
        assert!(
            r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{name}: {r:?}"
        );
    }
    for (name, socket) in [
        ("stalled", &mut stalled),
        ("plaintext stalled", &mut plain_stalled),
    ] {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        let r = socket.read_to_end(&mut rest);
        assert!(r.is_ok(), "{name}: not closed: {r:?}");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(8),
        "stalled handshakes closed after {elapsed:?}, deadline 2 s"
    );
    assert!(hub.metric("apiary_handshake_failures_total", None) >= 2);
    // The good edge is unharmed.
    ring.push_and_wake(&downstream(node, "cm", 2, b"y"))
        .unwrap();
    edge.pump_until("its second message", |e| e.received.len() == 2);
}

/// The child-process side of [`killing_the_control_side_loses_nothing`]:
/// pushes numbered objects for a node into a ring file and says so.
#[test]
#[ignore = "run by killing_the_control_side_loses_nothing as a child process"]
fn control_child() {
    let Ok(path) = std::env::var("APIARY_TEST_RING") else {
        return;
    };
    let node = std::env::var("APIARY_TEST_NODE").unwrap();
    let first: u64 = std::env::var("APIARY_TEST_FIRST").unwrap().parse().unwrap();
    let count: u64 = std::env::var("APIARY_TEST_COUNT").unwrap().parse().unwrap();
    let ring = shm::RingFile::open(
        path.as_ref(),
        shm::RingSize::Configured(support::RING_BYTES),
        shm::Role::Control,
    )
    .unwrap();
    let expect_upstream = std::env::var("APIARY_TEST_EXPECT_UPSTREAM").is_ok();
    let mut out = std::io::stdout();
    // The test harness's "test control_child ... " has no newline yet.
    writeln!(out).unwrap();
    let mut upstream = 0;
    // Upstream records the shard wrote, while no control side was running
    // or while this one pushes.
    let mut take_upstream = |out: &mut std::io::Stdout| {
        for record in support::drain(&ring) {
            if let UpRecord::Upstream {
                node_id, message, ..
            } = record
            {
                upstream += 1;
                writeln!(out, "upstream {node_id} {}", message.header.seq).unwrap();
            }
        }
        upstream
    };
    for i in first..first + count {
        let record = downstream(&node, &format!("obj-{i}"), 1, &i.to_le_bytes());
        loop {
            take_upstream(&mut out);
            match ring.push_and_wake(&record) {
                Ok(()) => break,
                Err(hub_core::ring::RingError::Full) => {
                    ring.waiter()
                        .wait_outbound_room(record.len(), Duration::from_millis(50));
                }
                Err(e) => panic!("{e}"),
            }
        }
        writeln!(out, "pushed {i}").unwrap();
        out.flush().unwrap();
    }
    // The shard moves what waited for room in the ring on its next tick.
    let deadline = Instant::now() + Duration::from_secs(20);
    while expect_upstream && take_upstream(&mut out) == 0 && Instant::now() < deadline {
        ring.wait_inbound(Duration::from_millis(50));
    }
    writeln!(out, "done").unwrap();
}

#[test]
fn killing_the_control_side_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    // Room for every object the first control process may push before the
    // kill, so the node's queue never overflows into a resync.
    let hub = HubProcess::start(
        dir.path(),
        Some(&pki),
        2,
        "[links]\nqueueBudgetBytes = 67108864\n",
    );
    let node = "edge-kill";
    let ring_path = shm::ring_path(&hub.ring_dir, hub.owner(node));
    let mut edge = Edge::tls(hub.tls.unwrap(), pki.client(node), node, 0);
    edge.pump_until("link up", Edge::is_up);

    let control = |first: u64, count: u64, expect_upstream: bool| {
        let mut command = Command::new(std::env::current_exe().unwrap());
        if expect_upstream {
            command.env("APIARY_TEST_EXPECT_UPSTREAM", "1");
        }
        command
            .args([
                "--exact",
                "control_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("APIARY_TEST_RING", &ring_path)
            .env("APIARY_TEST_NODE", node)
            .env("APIARY_TEST_FIRST", first.to_string())
            .env("APIARY_TEST_COUNT", count.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // First control process: killed with SIGKILL after it reported 500
    // pushes, while it is still pushing.
    let mut child = control(0, 1_000_000, false);
    let mut reported = BTreeSet::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while reported.len() < 500 {
        let line = lines.next().unwrap().unwrap();
        if let Some(i) = line.strip_prefix("pushed ") {
            reported.insert(i.parse::<u64>().unwrap());
        }
        edge.pump();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for line in lines.map_while(Result::ok) {
        if let Some(i) = line.strip_prefix("pushed ") {
            reported.insert(i.parse::<u64>().unwrap());
        }
    }

    // While no control side runs, the edge sends upstream.
    edge.send_upstream(1, b"while control was down");
    edge.pump_until("the message sent", |e| e.link.in_flight() == 1);
    // The hub took it: it waits in the ring for the next control process.
    hub.wait_metrics("the upstream message in the ring", |body| {
        metric_value(body, "apiary_messages_in_total", None) == 1
    });

    // A second control process takes the rings over.
    let mut child = control(1_000_000, 300, true);
    let mut upstream_seen = false;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == format!("upstream {node} 1") {
            upstream_seen = true;
        }
        if let Some(i) = line.strip_prefix("pushed ") {
            reported.insert(i.parse::<u64>().unwrap());
        }
        if line == "done" {
            break;
        }
        edge.pump();
    }
    assert!(child.wait().unwrap().success());
    assert!(
        upstream_seen,
        "the restarted control side did not get the upstream message"
    );

    // Everything either control process reported pushed reaches the edge,
    // once.
    edge.pump_until("every reported object", |e| {
        let names: BTreeSet<String> = e.object_names().into_iter().collect();
        reported.iter().all(|i| names.contains(&format!("obj-{i}")))
    });
    let names = edge.object_names();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "an object arrived twice");
}

/// The last link state each node's records report, in ring order.
fn link_states(seen: &[UpRecord]) -> BTreeMap<String, bool> {
    let mut state = BTreeMap::new();
    for r in seen {
        match r {
            UpRecord::Connected { node_id, .. } => state.insert(node_id.clone(), true),
            UpRecord::Disconnected { node_id, .. } => state.insert(node_id.clone(), false),
            _ => None,
        };
    }
    state
}

#[test]
fn a_reconnect_storm_against_a_full_ring_loses_no_connection_state() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    // A ring of a few dozen records and a backlog of a few: nobody reads
    // the ring while the fleet connects and drops five times over.
    let hub = HubProcess::start_with_rings(dir.path(), Some(&pki), 1, (4096, 256), "");
    let addr = hub.tls.unwrap();
    let nodes = node_names(24);
    for _ in 0..5 {
        let mut edges: Vec<Edge> = nodes
            .iter()
            .map(|n| Edge::tls(addr, pki.client(n), n, 0))
            .collect();
        pump_all(&mut edges, "every link up", Edge::is_up);
    }
    let mut edges: Vec<Edge> = nodes
        .iter()
        .map(|n| Edge::tls(addr, pki.client(n), n, 0))
        .collect();
    pump_all(&mut edges, "every link up", Edge::is_up);
    hub.wait_metrics("a backlog behind the full ring", |body| {
        metric_value(body, "apiary_ring_backlog_bytes", Some(0)) > 0
    });
    // The control side comes back: in the end every node reads as
    // connected, whatever was held back meanwhile.
    let rings = [hub.control(0)];
    let mut seen = Vec::new();
    collect_until(&rings, &mut seen, "every node connected", |seen| {
        let states = link_states(seen);
        nodes.iter().all(|n| states.get(n) == Some(&true))
    });
    for e in &mut edges {
        e.pump();
        assert!(e.is_up(), "{} stayed up", e.node);
    }
}
