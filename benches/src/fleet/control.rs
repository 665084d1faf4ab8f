//! The control side of the rings, played by `fleetbench`: one thread per
//! shard pushes downstream objects for the shard's nodes (at a rate or flat
//! out), takes the upstream records, acknowledges upstream messages with
//! `Committed`, and counts what the hub reports delivered.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use schema::records::{self, DownRecord, ObjectKey, UpRecord};
use schema::{Header, Message, Route};

use super::stats::{Stats, now_ns, stamp, stamped_at};

/// Downstream work of one shard.
#[derive(Debug, Clone, Default)]
pub struct Work {
    /// The shard's nodes.
    pub nodes: Vec<String>,
    /// Objects per node (each a distinct object, so none coalesce).
    pub objects: u64,
    /// Messages per second for this shard; 0 = as fast as the ring takes.
    pub rate: f64,
    pub payload: usize,
    /// Number of the first object (objects are `obj-{n}`).
    pub first_object: u64,
    /// Send every upstream message back to its node as a downstream
    /// object (`echo-{seq}`), its content (and so its send stamp) kept.
    pub echo: bool,
}

/// What the control side saw.
#[derive(Debug, Default)]
pub struct ControlCounters {
    pub pushed: AtomicU64,
    pub delivered: AtomicU64,
    pub ring_full_waits: AtomicU64,
    pub connected: AtomicU64,
    pub disconnected: AtomicU64,
}

/// Starts the thread of one shard's ring file; it ends once `stop` is set
/// and its work is pushed.
pub fn spawn(
    ring: shm::RingFile,
    work: Work,
    stats: Arc<Stats>,
    counters: Arc<ControlCounters>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || run(ring, work, stats, counters, stop))
}

fn run(
    ring: shm::RingFile,
    work: Work,
    stats: Arc<Stats>,
    counters: Arc<ControlCounters>,
    stop: Arc<AtomicBool>,
) {
    let total = work.objects * work.nodes.len() as u64;
    let started = Instant::now();
    let mut pushed = 0u64;
    let mut pending: Option<Vec<u8>> = None;
    let mut upstream_seen: HashMap<String, u64> = HashMap::new();
    let mut to_commit: Vec<String> = Vec::new();
    let mut buf = Vec::new();
    loop {
        // Upstream records first: they free room for the hub's reports.
        let mut took = 0;
        while let Ok(true) = ring.pop_and_wake(&mut buf) {
            took += 1;
            match records::from_bytes::<UpRecord>(&buf) {
                Ok(UpRecord::Upstream {
                    node_id, message, ..
                }) => {
                    let seen = upstream_seen.entry(node_id.clone()).or_default();
                    if message.header.seq > *seen {
                        *seen = message.header.seq;
                        stats
                            .record_upstream(now_ns().saturating_sub(stamped_at(&message.content)));
                        if work.echo {
                            let name = format!("echo-{}", message.header.seq);
                            let record = record(&node_id, name, message.content.clone());
                            while ring.push_and_wake(&record).is_err() {
                                ring.wait_outbound_room(record.len(), Duration::from_millis(5));
                            }
                        }
                        to_commit.push(node_id);
                    }
                }
                Ok(UpRecord::Delivered { objects, .. }) => {
                    counters
                        .delivered
                        .fetch_add(objects.len() as u64, Ordering::Relaxed);
                }
                Ok(UpRecord::Connected { .. }) => {
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                }
                Ok(UpRecord::Disconnected { .. }) => {
                    counters.disconnected.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => eprintln!("fleetbench: unreadable ring record: {e}"),
            }
        }
        to_commit.sort_unstable();
        to_commit.dedup();
        for node in to_commit.drain(..) {
            let seq = upstream_seen[&node];
            let record = records::to_bytes(&DownRecord::Committed {
                node_id: node,
                // fleetbench's edges send no store identity.
                store_id: 0,
                seq,
            });
            while ring.push_and_wake(&record).is_err() {
                ring.wait_outbound_room(record.len(), Duration::from_millis(5));
            }
        }
        // Downstream work, paced.
        let allowed = if work.rate > 0.0 {
            ((started.elapsed().as_secs_f64() * work.rate) as u64).min(total)
        } else {
            total
        };
        let mut full = false;
        while pushed < allowed {
            let record = pending.take().unwrap_or_else(|| {
                let node = &work.nodes[(pushed % work.nodes.len() as u64) as usize];
                let object = work.first_object + pushed / work.nodes.len() as u64;
                downstream(node, object, work.payload)
            });
            match ring.push_and_wake(&record) {
                Ok(()) => {
                    pushed += 1;
                    counters.pushed.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    pending = Some(record);
                    full = true;
                    counters.ring_full_waits.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        if stop.load(Ordering::Relaxed) && pushed == total {
            return;
        }
        if took == 0 {
            if full {
                ring.wait_outbound_room(256, Duration::from_millis(1));
            } else {
                ring.wait_inbound(Duration::from_millis(1));
            }
        }
    }
}

fn downstream(node: &str, object: u64, payload: usize) -> Vec<u8> {
    record(node, format!("obj-{object}"), stamp(payload))
}

/// A downstream record of object `name` (a ConfigMap in namespace
/// "bench", version 1) carrying `content`.
fn record(node: &str, name: String, content: Vec<u8>) -> Vec<u8> {
    let message = Message {
        header: Header {
            id: format!("{node}/{name}"),
            resource_version: 1,
            ..Header::default()
        },
        route: Route {
            source: "edgecontroller".into(),
            group: "resource".into(),
            operation: "update".into(),
            resource: format!("bench/configmap/{name}"),
            ..Route::default()
        },
        content,
    };
    records::to_bytes(&DownRecord::Downstream {
        node_id: node.to_owned(),
        key: ObjectKey {
            kind: "configmap".into(),
            namespace: "bench".into(),
            name,
        },
        message,
    })
    .to_vec()
}
