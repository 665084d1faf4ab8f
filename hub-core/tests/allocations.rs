//! Heap allocations of the hub engine per message in steady state, counted
//! by a global allocator installed in this test binary alone.
//!
//! Nodes are connected, each round routes messages to every node, the
//! batches are polled and their buffers handed back, and each node's
//! cumulative ack is fed in and the delivery reports drained. After a
//! warm-up (buffers, queues and tables at their working size) the
//! downstream path (enqueue, transmit) and the ack path (ack, delivery
//! report) are counted separately, on this thread only.

// Implementing `GlobalAlloc` is `unsafe` by definition; this one forwards to
// the system allocator and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use hub_core::protocol::CAPABILITIES;
use hub_core::{Hub, HubConfig, HubEvent, PROTOCOL_VERSION};
use schema::frames::Hello;
use schema::records::ObjectKey;
use schema::{FrameEncoder, Header, Message, Route};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the allocator may run while the thread's locals are torn
    // down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter is a const-initialised thread local
// that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as the caller gave it.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as the caller gave it.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread by `f`.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const NODES: usize = 50;
const OBJECTS: u64 = 20;
const WARM_UP: u64 = 20;
const ROUNDS: u64 = 50;

fn node_name(n: usize) -> String {
    format!("edge-node-{n:04}")
}

fn message(node: &str, object: u64, rv: u64) -> (ObjectKey, Message) {
    let key = ObjectKey {
        kind: "pod".into(),
        namespace: "default".into(),
        name: format!("nginx-{object}"),
    };
    let message = Message {
        header: Header {
            id: format!("6f1c2a4e-0b7d-4c55-9a3e-{rv:06x}{object:06x}"),
            timestamp_ms: 1_700_000_000_000 + rv,
            resource_version: rv,
            ..Header::default()
        },
        route: Route {
            source: "edgecontroller".into(),
            destination: node.into(),
            group: "resource".into(),
            operation: "update".into(),
            resource: format!("default/pod/nginx-{object}"),
        },
        content: vec![b'x'; 256],
    };
    (key, message)
}

/// A hub with every node connected, and the glue's view of it.
struct Fleet {
    hub: Hub,
    names: Vec<String>,
    acked: Vec<u64>,
    encoder: FrameEncoder,
    now: u64,
}

impl Fleet {
    fn new() -> Self {
        // Timers come due every few rounds (a round is a millisecond), and
        // so does the slab's trim.
        let mut hub = Hub::new(HubConfig {
            keepalive_interval_ms: 10,
            ..HubConfig::default()
        });
        let mut encoder = FrameEncoder::default();
        let names: Vec<String> = (0..NODES).map(node_name).collect();
        for (n, name) in names.iter().enumerate() {
            let hello = Hello {
                node_id: name,
                protocol_version: PROTOCOL_VERSION,
                capabilities: CAPABILITIES,
                ..Hello::default()
            };
            let mut bytes = Vec::new();
            encoder.hello(&hello, &mut bytes).unwrap();
            hub.handle_connect(n as u64, Some(name), 0);
            hub.handle_bytes(n as u64, &bytes, 0);
        }
        while hub.poll_transmit(0).is_some() {}
        while hub.poll_event().is_some() {}
        assert_eq!(hub.connected(), NODES);
        Self {
            hub,
            acked: vec![0; NODES],
            names,
            encoder,
            now: 0,
        }
    }

    /// The round's messages, one new version of every object of every node.
    fn messages(&self, round: u64) -> Vec<(usize, ObjectKey, Message)> {
        let mut out = Vec::new();
        for (n, name) in self.names.iter().enumerate() {
            for object in 0..OBJECTS {
                let (key, message) = message(name, object, round + 1);
                out.push((n, key, message));
            }
        }
        out
    }

    /// Each node's cumulative ack of everything sent so far.
    fn acks(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for acked in &mut self.acked {
            *acked += OBJECTS;
            let mut bytes = Vec::new();
            self.encoder.ack(*acked, &mut bytes).unwrap();
            out.push(bytes);
        }
        out
    }

    /// Enqueues (the hub copies what it keeps) and transmits, handing the
    /// buffers back as the glue does once they are written: returns the
    /// messages and bytes sent.
    fn downstream(&mut self, messages: &[(usize, ObjectKey, Message)]) -> (u64, usize) {
        self.now += 1;
        self.hub.handle_timeout(self.now);
        let mut routed = 0;
        for (n, key, message) in messages {
            let outcome = self.hub.handle_downstream(&self.names[*n], key, message);
            assert!(outcome.is_ok());
            routed += 1;
        }
        let mut bytes = 0;
        while let Some((_, transmit)) = self.hub.poll_transmit(self.now) {
            bytes += transmit.bytes.len();
            self.hub.recycle_transmit(transmit.bytes);
        }
        (routed, bytes)
    }

    /// Feeds the acks in and drains the delivery reports: returns the
    /// objects reported delivered.
    fn ack(&mut self, acks: &[Vec<u8>]) -> u64 {
        for (n, bytes) in acks.iter().enumerate() {
            self.hub.handle_bytes(n as u64, bytes, self.now);
        }
        let mut delivered = 0;
        while let Some(event) = self.hub.poll_event() {
            match event {
                HubEvent::Delivered { objects, .. } => {
                    delivered += objects.len() as u64;
                    self.hub.recycle_delivered(objects);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        while self.hub.poll_transmit(self.now).is_some() {}
        delivered
    }
}

#[test]
fn steady_state_routing_allocates_nothing_per_message() {
    let mut fleet = Fleet::new();
    let (mut down, mut up, mut messages) = (0, 0, 0);
    for round in 0..WARM_UP + ROUNDS {
        let batch = fleet.messages(round);
        let acks = fleet.acks();
        let mut sent = (0, 0);
        let a = allocations(|| sent = fleet.downstream(&batch));
        assert_eq!(sent.0, NODES as u64 * OBJECTS);
        assert!(sent.1 > sent.0 as usize * 256, "every message was sent");
        let mut delivered = 0;
        let b = allocations(|| delivered = fleet.ack(&acks));
        assert_eq!(delivered, sent.0, "every message was acknowledged");
        if round >= WARM_UP {
            down += a;
            up += b;
            messages += sent.0;
        }
    }
    let per_message = |n: u64| n as f64 / messages as f64;
    eprintln!(
        "allocations per message: downstream {:.3}, ack {:.3} ({down} and {up} over {messages} messages)",
        per_message(down),
        per_message(up),
    );
    assert_eq!(
        (down, up),
        (0, 0),
        "allocations on the downstream and ack paths"
    );
}
