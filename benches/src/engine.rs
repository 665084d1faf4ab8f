//! The hub engine with no I/O: many connected sessions, messages enqueued,
//! transmitted as batches and acknowledged. Shared by the criterion bench
//! `benches/engine.rs`.

use hub_core::{Hub, HubConfig, HubEvent};
use schema::frames::Hello;
use schema::records::ObjectKey;
use schema::{FrameEncoder, Message};

use crate::workload::pod_update;

/// A hub with `nodes` handshaken sessions and an edge-side encoder for acks.
#[derive(Debug)]
pub struct EngineWorkload {
    pub hub: Hub,
    names: Vec<String>,
    acked: Vec<u64>,
    encoder: FrameEncoder,
    scratch: Vec<u8>,
    now: u64,
}

impl EngineWorkload {
    pub fn new(nodes: usize) -> Self {
        let config = HubConfig {
            node_limit: nodes,
            ..HubConfig::default()
        };
        let mut hub = Hub::new(config);
        let mut encoder = FrameEncoder::default();
        let mut bytes = Vec::new();
        let names: Vec<String> = (0..nodes).map(|i| format!("edge-node-{i:06}")).collect();
        for (i, name) in names.iter().enumerate() {
            bytes.clear();
            let hello = Hello {
                node_id: name,
                protocol_version: hub_core::PROTOCOL_VERSION,
                resume_seq: 0,
                received_seq: 0,
                capabilities: hub_core::protocol::CAPABILITIES,
                store_id: 0,
            };
            encoder.hello(&hello, &mut bytes).expect("a Hello fits");
            hub.handle_connect(i as u64, Some(name), 0);
            hub.handle_bytes(i as u64, &bytes, 0);
        }
        while hub.poll_transmit(0).is_some() {}
        while hub.poll_event().is_some() {}
        assert_eq!(hub.connected(), nodes, "every session is up");
        Self {
            hub,
            acked: vec![0; nodes],
            names,
            encoder,
            scratch: Vec::new(),
            now: 0,
        }
    }

    /// Names of the nodes, in session order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// `per_node` Pod updates for every node, with `content` bytes each;
    /// object names repeat from round to round, versions grow.
    pub fn messages(
        names: &[String],
        round: u64,
        per_node: u64,
        content: usize,
    ) -> Vec<(usize, ObjectKey, Message)> {
        let mut out = Vec::with_capacity(names.len() * per_node as usize);
        for (n, name) in names.iter().enumerate() {
            for j in 0..per_node {
                let mut m = pod_update(name, j, content);
                m.header.resource_version = round * per_node + j + 1;
                let key = ObjectKey {
                    kind: "pod".into(),
                    namespace: "default".into(),
                    name: format!("nginx-{j}"),
                };
                out.push((n, key, m));
            }
        }
        out
    }

    /// Lets `ms` pass with no traffic and runs the hub's timers, answering
    /// every keepalive as a live node would.
    pub fn idle_tick(&mut self, ms: u64) {
        self.now += ms;
        let now = self.now;
        self.hub.handle_timeout(now);
        while self.hub.poll_transmit(now).is_some() {}
        for n in 0..self.names.len() {
            self.scratch.clear();
            self.encoder
                .keepalive(now, &mut self.scratch)
                .expect("a Keepalive fits");
            self.hub.handle_bytes(n as u64, &self.scratch, now);
        }
        while self.hub.poll_event().is_some() {}
    }

    /// Enqueues `messages`, transmits everything ready, feeds each node's
    /// cumulative ack back, and drains the events. Returns the messages the
    /// nodes acknowledged. The messages are dropped here, as a caller that
    /// built owned messages for the hub does.
    pub fn round(&mut self, messages: Vec<(usize, ObjectKey, Message)>) -> u64 {
        let delivered = self.round_borrowed(&messages);
        drop(messages);
        delivered
    }

    /// [`round`](Self::round) with messages the hub only reads (it copies
    /// what it keeps), as a ring record read in place would hand them.
    pub fn round_borrowed(&mut self, messages: &[(usize, ObjectKey, Message)]) -> u64 {
        self.now += 1;
        let now = self.now;
        let mut sent = vec![0u64; self.names.len()];
        for (n, key, message) in messages {
            let _ = self.hub.handle_downstream(&self.names[*n], key, message);
            sent[*n] += 1;
        }
        let mut bytes = 0;
        while let Some((_, t)) = self.hub.poll_transmit(now) {
            bytes += t.bytes.len();
            self.hub.recycle_transmit(t.bytes);
        }
        std::hint::black_box(bytes);
        for (n, count) in sent.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            self.acked[n] += count;
            self.scratch.clear();
            self.encoder
                .ack(self.acked[n], &mut self.scratch)
                .expect("an Ack fits");
            self.hub.handle_bytes(n as u64, &self.scratch, now);
        }
        let mut delivered = 0;
        while let Some(event) = self.hub.poll_event() {
            if let HubEvent::Delivered { objects, .. } = event {
                delivered += objects.len() as u64;
                self.hub.recycle_delivered(objects);
            }
        }
        delivered
    }
}
