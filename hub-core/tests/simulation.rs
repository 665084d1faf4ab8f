//! Deterministic simulation of one hub and many edge nodes on a virtual clock.
//!
//! A seeded schedule creates, updates and deletes objects, writes upstream
//! outbox entries, delays and splits byte streams (in order, never corrupted:
//! TCP semantics), drops connections, restarts edges (which keep only what
//! they committed), wipes edges' stores (an edge keeps its certificate and
//! loses everything it committed, its outbox included, as after a reflash;
//! its new store has a new identity) and restarts the hub (the control side
//! then re-sends what its checkpoints do not cover). After the faults stop
//! and the fleet settles,
//! it checks that every node holds exactly the latest version of each of its
//! objects and none deleted, that no node ever applied an older version after
//! a newer one, and that every outbox entry reached the control side exactly
//! once (every entry of the edge's current store: a wiped store's unsent
//! entries are gone with the disk).
//!
//! Runs `SIM_SEEDS` seeds (default 300) from `SIM_FIRST_SEED` (default 1);
//! `SIM_SEED=n` replays one seed exactly:
//!
//! ```text
//! SIM_SEEDS=5000 cargo test --release -p hub-core --test simulation
//! SIM_SEED=1234 cargo test -p hub-core --test simulation -- --nocapture
//! ```

use std::collections::{BTreeMap, VecDeque};

use hub_core::link::{Link, LinkConfig, LinkEvent};
use hub_core::protocol::Millis;
use hub_core::{ConnId, Hub, HubConfig, HubEvent};
use schema::records::ObjectKey;
use schema::{Header, Message, Route};

/// splitmix64: the schedule's only source of randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// Bugs planted on purpose, to show the simulation finds them.
#[derive(Debug, Clone, Copy, Default)]
struct Plant {
    /// The edge applies whatever arrives, without comparing resourceVersions.
    no_version_check: bool,
    /// A restarted edge resumes from what it received, not what it committed.
    resume_from_received: bool,
    /// Edges send no store identity, and the control side keeps none: a
    /// wiped store is taken for the old one.
    no_store_identity: bool,
}

/// One direction of a connection: chunks in order, then maybe the end.
type Pipe = VecDeque<(Millis, Option<Vec<u8>>)>;

struct Conn {
    edge: usize,
    to_edge: Pipe,
    to_hub: Pipe,
    /// The hub has closed or forgotten this connection.
    hub_done: bool,
}

/// What an edge node keeps, durable or not.
struct Edge {
    name: String,
    link: Link,
    conn: Option<ConnId>,
    connecting_at: Option<Millis>,
    /// Committed store: resource → (resourceVersion, deleted).
    store: BTreeMap<String, (u64, bool)>,
    committed_seq: u64,
    /// Delivered, not yet committed (lost on restart).
    pending: Vec<Message>,
    received_seq: u64,
    /// Durable outbox: seq → message.
    outbox: BTreeMap<u64, Message>,
    next_outbox_seq: u64,
    generation: u64,
    /// Identity of the current store, new at every wipe.
    store_id: u64,
}

/// The control side: desired state, checkpoints, upstream received.
#[derive(Default)]
struct Control {
    desired: BTreeMap<(usize, String), (u64, bool)>,
    checkpoint: BTreeMap<(usize, String), u64>,
    unflushed: Vec<((usize, String), u64)>,
    /// Every version sent, per object, for stale replays.
    history: BTreeMap<(usize, String), Vec<(u64, bool)>>,
    next_rv: u64,
    upstream: Vec<Vec<u64>>,
    /// Store identity last seen per node (durable, like the checkpoints).
    store_ids: Vec<u64>,
}

struct World {
    rng: Rng,
    now: Millis,
    plant: Plant,
    hub: Hub,
    hub_config: HubConfig,
    edges: Vec<Edge>,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    control: Control,
    violations: Vec<String>,
    objects_per_node: u64,
    stats: Stats,
}

/// What a run did, printed when one seed is replayed.
#[derive(Debug, Default)]
struct Stats {
    connections: u64,
    dropped: u64,
    edge_restarts: u64,
    hub_restarts: u64,
    store_wipes: u64,
    applied: u64,
    upstream: u64,
}

fn key(resource: &str) -> ObjectKey {
    ObjectKey::parse(resource).unwrap()
}

fn object_message(resource: &str, rv: u64, deleted: bool) -> Message {
    Message {
        header: Header {
            id: format!("{resource}@{rv}"),
            resource_version: rv,
            ..Header::default()
        },
        route: Route {
            source: "edgecontroller".into(),
            group: "resource".into(),
            operation: if deleted { "delete" } else { "update" }.into(),
            resource: resource.into(),
            ..Route::default()
        },
        content: format!("{{\"rv\":{rv}}}").into_bytes(),
    }
}

impl World {
    fn new(seed: u64, plant: Plant) -> Self {
        let mut rng = Rng(seed);
        let nodes = 2 + rng.below(7) as usize;
        let hub_config = HubConfig {
            window: 1 + rng.below(32) as u32,
            upstream_window: 1 + rng.below(32) as u32,
            keepalive_interval_ms: 1_000,
            missed_keepalives: 3,
            handshake_timeout_ms: 2_000,
            retransmit_timeout_ms: 2_500,
            max_batch_bytes: 512 + rng.below(4096) as u32,
            // Room for every object of a node: a queue that cannot hold a
            // node's snapshot can never resync it (the overflow path is
            // covered by the hub's unit tests).
            queue_budget_bytes: 1 << 20,
            ..HubConfig::default()
        };
        let mut world = World {
            now: 0,
            plant,
            hub: Hub::new(hub_config.clone()),
            hub_config,
            edges: Vec::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            control: Control {
                next_rv: 1,
                upstream: vec![Vec::new(); nodes],
                store_ids: vec![0; nodes],
                ..Control::default()
            },
            violations: Vec::new(),
            objects_per_node: 3 + rng.below(10),
            stats: Stats::default(),
            rng,
        };
        for i in 0..nodes {
            let name = format!("edge-{i}");
            let store_id = world.new_store_id();
            let link = world.new_link(&name, 0, i as u64, store_id);
            world.edges.push(Edge {
                name,
                link,
                conn: None,
                connecting_at: None,
                store: BTreeMap::new(),
                committed_seq: 0,
                pending: Vec::new(),
                received_seq: 0,
                outbox: BTreeMap::new(),
                next_outbox_seq: 1,
                generation: 0,
                store_id,
            });
        }
        world
    }

    fn new_store_id(&mut self) -> u64 {
        if self.plant.no_store_identity {
            0
        } else {
            self.rng.next() | 1
        }
    }

    fn new_link(&mut self, name: &str, committed: u64, salt: u64, store_id: u64) -> Link {
        let mut config = LinkConfig::new(name);
        config.keepalive_interval_ms = 1_000;
        config.handshake_timeout_ms = 2_000;
        config.backoff.initial_ms = 50;
        config.backoff.max_ms = 2_000;
        config.qps = 0;
        config.store_id = store_id;
        Link::new(config, committed, self.rng.next() ^ salt, self.now)
    }

    // ---- the schedule ----------------------------------------------------

    fn chaos_step(&mut self) {
        let nodes = self.edges.len();
        let node = self.rng.below(nodes as u64) as usize;
        if self.rng.chance(250) {
            self.update_object(node);
        }
        if self.rng.chance(40) {
            self.delete_object(node);
        }
        if self.rng.chance(120) {
            self.write_outbox(node);
        }
        if self.rng.chance(30) {
            self.replay_stale(node);
        }
        if self.rng.chance(8) {
            self.drop_connection();
        }
        if self.rng.chance(4) {
            self.restart_edge(node);
        }
        if self.rng.chance(1) {
            self.wipe_edge(node);
        }
        if self.rng.chance(1) {
            self.restart_hub();
        }
    }

    /// One of the node's objects, chosen at random.
    fn random_resource(&mut self) -> String {
        let name = self.rng.below(self.objects_per_node);
        format!("default/configmap/c{name}")
    }

    fn update_object(&mut self, node: usize) {
        let resource = self.random_resource();
        self.change(node, resource, false);
    }

    fn delete_object(&mut self, node: usize) {
        let resource = self.random_resource();
        if let Some((_, false)) = self.control.desired.get(&(node, resource.clone())) {
            self.change(node, resource, true);
        }
    }

    /// The control side changes an object: a new resourceVersion, sent on.
    fn change(&mut self, node: usize, resource: String, deleted: bool) {
        let rv = self.control.next_rv;
        self.control.next_rv += 1;
        self.control
            .desired
            .insert((node, resource.clone()), (rv, deleted));
        self.send(node, &resource, rv, deleted);
    }

    /// A lagging watch on the control side sends an old version again.
    fn replay_stale(&mut self, node: usize) {
        let resource = self.random_resource();
        let Some(versions) = self.control.history.get(&(node, resource.clone())) else {
            return;
        };
        if versions.len() < 2 {
            return;
        }
        let (rv, deleted) = versions[self.rng.below(versions.len() as u64 - 1) as usize];
        self.send(node, &resource, rv, deleted);
    }

    fn send(&mut self, node: usize, resource: &str, rv: u64, deleted: bool) {
        let seen = self
            .control
            .history
            .entry((node, resource.to_owned()))
            .or_default();
        if !seen.contains(&(rv, deleted)) {
            seen.push((rv, deleted));
        }
        let message = object_message(resource, rv, deleted);
        let name = self.edges[node].name.clone();
        // Stale and overflowing pushes are the hub's to refuse: the overflow
        // comes back as `ResyncNeeded`.
        let _outcome = self
            .hub
            .handle_downstream(&name, key(resource), message)
            .expect("small messages fit");
    }

    fn write_outbox(&mut self, node: usize) {
        let edge = &mut self.edges[node];
        let seq = edge.next_outbox_seq;
        edge.next_outbox_seq += 1;
        let message = Message {
            header: Header {
                id: format!("{}-status-{seq}", edge.name),
                ..Header::default()
            },
            route: Route {
                source: "edged".into(),
                group: "resource".into(),
                operation: "update".into(),
                resource: format!("default/podstatus/p{seq}"),
                ..Route::default()
            },
            content: b"{\"phase\":\"Running\"}".to_vec(),
        };
        edge.outbox.insert(seq, message.clone());
        edge.link.handle_outbox(seq, message);
    }

    fn drop_connection(&mut self) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        if ids.is_empty() {
            return;
        }
        let id = ids[self.rng.below(ids.len() as u64) as usize];
        self.stats.dropped += 1;
        self.kill_conn(id);
    }

    fn kill_conn(&mut self, id: ConnId) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        if !conn.hub_done {
            self.hub.handle_disconnect(id);
        }
        let edge = &mut self.edges[conn.edge];
        if edge.conn == Some(id) {
            edge.conn = None;
            edge.link.handle_disconnected(self.now);
        }
    }

    fn restart_edge(&mut self, node: usize) {
        self.stats.edge_restarts += 1;
        if let Some(id) = self.edges[node].conn {
            self.kill_conn(id);
        }
        let resume = if self.plant.resume_from_received {
            self.edges[node].received_seq
        } else {
            self.edges[node].committed_seq
        };
        let name = self.edges[node].name.clone();
        let store_id = self.edges[node].store_id;
        let link = self.new_link(&name, resume, node as u64, store_id);
        let edge = &mut self.edges[node];
        edge.link = link;
        edge.pending.clear();
        edge.received_seq = edge.committed_seq;
        edge.connecting_at = None;
        edge.generation += 1;
        for (&seq, message) in &edge.outbox {
            edge.link.handle_outbox(seq, message.clone());
        }
    }

    /// The edge comes back with its certificate and an empty store: nothing
    /// committed, no outbox, a new store identity.
    fn wipe_edge(&mut self, node: usize) {
        self.stats.store_wipes += 1;
        if let Some(id) = self.edges[node].conn {
            self.kill_conn(id);
        }
        let store_id = self.new_store_id();
        let name = self.edges[node].name.clone();
        let link = self.new_link(&name, 0, node as u64, store_id);
        let edge = &mut self.edges[node];
        edge.link = link;
        edge.store.clear();
        edge.committed_seq = 0;
        edge.pending.clear();
        edge.received_seq = 0;
        edge.outbox.clear();
        edge.next_outbox_seq = 1;
        edge.connecting_at = None;
        edge.generation += 1;
        edge.store_id = store_id;
    }

    /// The control side sees `store_id` for node `n`: a store other than
    /// the one it knew lost everything, so what the node acknowledged and
    /// sent upstream is forgotten and it gets a full snapshot.
    fn observe_store(&mut self, n: usize, store_id: u64) {
        if self.plant.no_store_identity || self.control.store_ids[n] == store_id {
            return;
        }
        let known = std::mem::replace(&mut self.control.store_ids[n], store_id);
        if known == 0 {
            return;
        }
        self.control.checkpoint.retain(|(node, _), _| *node != n);
        self.control.unflushed.retain(|((node, _), _)| *node != n);
        self.control.upstream[n].clear();
        self.resync(n);
    }

    fn restart_hub(&mut self) {
        self.stats.hub_restarts += 1;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.hub_done = true;
            }
            self.kill_conn(id);
        }
        self.hub = Hub::new(self.hub_config.clone());
        // The control side re-sends what its checkpoints do not cover.
        let stale: Vec<((usize, String), (u64, bool))> = self
            .control
            .desired
            .iter()
            .filter(|(k, (rv, _))| self.control.checkpoint.get(*k).is_none_or(|c| c < rv))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for ((node, resource), (rv, deleted)) in stale {
            self.send(node, &resource, rv, deleted);
        }
    }

    fn resync(&mut self, node: usize) {
        let name = self.edges[node].name.clone();
        self.hub.handle_resync_started(&name);
        let all: Vec<(String, (u64, bool))> = self
            .control
            .desired
            .range((node, String::new())..(node + 1, String::new()))
            .map(|((_, r), v)| (r.clone(), *v))
            .collect();
        for (resource, (rv, deleted)) in all {
            self.send(node, &resource, rv, deleted);
        }
    }

    // ---- one tick of the virtual clock --------------------------------------

    fn tick(&mut self) {
        self.now += 1 + self.rng.below(20);
        let now = self.now;
        // Connection attempts.
        for i in 0..self.edges.len() {
            if self.edges[i].connecting_at.is_none() && self.edges[i].link.poll_connect(now) {
                self.edges[i].connecting_at = Some(now + 1 + self.rng.below(30));
            }
            if self.edges[i].connecting_at.is_some_and(|at| at <= now) {
                self.edges[i].connecting_at = None;
                if self.rng.chance(50) {
                    self.edges[i].link.handle_connect_failed(now);
                } else {
                    let id = self.next_conn;
                    self.next_conn += 1;
                    self.stats.connections += 1;
                    let conn = Conn {
                        edge: i,
                        to_edge: VecDeque::new(),
                        to_hub: VecDeque::new(),
                        hub_done: false,
                    };
                    self.conns.insert(id, conn);
                    let name = self.edges[i].name.clone();
                    self.hub.handle_connect(id, Some(&name), now);
                    self.edges[i].conn = Some(id);
                    self.edges[i].link.handle_connected(now);
                }
            }
        }
        // Timers.
        if self.hub.poll_timeout().is_some_and(|t| t <= now) {
            self.hub.handle_timeout(now);
        }
        for edge in &mut self.edges {
            if edge.link.poll_timeout().is_some_and(|t| t <= now) {
                edge.link.handle_timeout(now);
            }
        }
        self.pump();
        // Deliver what is due, then react, until nothing moves.
        for round in 0.. {
            assert!(round < 100_000, "deliveries never settle at {now} ms");
            let moved = self.deliver();
            self.pump();
            if !moved {
                break;
            }
        }
        // Group commits at the edges.
        for i in 0..self.edges.len() {
            if !self.edges[i].pending.is_empty() && self.rng.chance(300) {
                self.commit(i);
            }
        }
        // Checkpoints are written in batches.
        if now % 500 < 20 {
            for (k, rv) in self.control.unflushed.drain(..) {
                let slot = self.control.checkpoint.entry(k).or_insert(0);
                *slot = (*slot).max(rv);
            }
        }
        self.pump();
    }

    /// Drains every output and event of the hub and the links.
    fn pump(&mut self) {
        let now = self.now;
        for round in 0.. {
            assert!(round < 100_000, "outputs never drain at {now} ms");
            let mut moved = false;
            while let Some((id, t)) = self.hub.poll_transmit(now) {
                moved = true;
                let delay = self.rng.below(25);
                if let Some(conn) = self.conns.get_mut(&id) {
                    push_chunks(&mut self.rng, &mut conn.to_edge, now + delay, t.bytes);
                    if t.close {
                        conn.hub_done = true;
                        conn.to_edge.push_back((now + delay, None));
                    }
                }
            }
            while let Some(event) = self.hub.poll_event() {
                moved = true;
                self.on_hub_event(event);
            }
            for i in 0..self.edges.len() {
                while let Some(t) = self.edges[i].link.poll_transmit(now) {
                    moved = true;
                    let delay = self.rng.below(25);
                    let Some(id) = self.edges[i].conn else {
                        continue;
                    };
                    if let Some(conn) = self.conns.get_mut(&id) {
                        push_chunks(&mut self.rng, &mut conn.to_hub, now + delay, t.bytes);
                        if t.close {
                            conn.to_hub.push_back((now + delay, None));
                            self.edges[i].conn = None;
                        }
                    }
                }
                while let Some(event) = self.edges[i].link.poll_event() {
                    moved = true;
                    self.on_link_event(i, event);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Delivers every chunk that is due. Returns whether anything moved.
    fn deliver(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            for round in 0.. {
                assert!(
                    round < 1_000_000,
                    "connection {id} never drains at {now} ms"
                );
                let Some(conn) = self.conns.get_mut(&id) else {
                    break;
                };
                let edge = conn.edge;
                if let Some(&(at, _)) = conn.to_edge.front()
                    && at <= now
                {
                    let (_, chunk) = conn.to_edge.pop_front().expect("front exists");
                    moved = true;
                    if self.edges[edge].conn != Some(id) {
                        continue;
                    }
                    match chunk {
                        Some(bytes) => self.edges[edge].link.handle_bytes(&bytes, now),
                        None => {
                            self.edges[edge].conn = None;
                            self.edges[edge].link.handle_disconnected(now);
                        }
                    }
                    continue;
                }
                if let Some(&(at, _)) = conn.to_hub.front()
                    && at <= now
                {
                    let (_, chunk) = conn.to_hub.pop_front().expect("front exists");
                    moved = true;
                    if conn.hub_done {
                        continue;
                    }
                    match chunk {
                        Some(bytes) => self.hub.handle_bytes(id, &bytes, now),
                        None => {
                            conn.hub_done = true;
                            self.hub.handle_disconnect(id);
                        }
                    }
                    continue;
                }
                break;
            }
            if let Some(conn) = self.conns.get(&id)
                && conn.hub_done
                && self.edges[conn.edge].conn != Some(id)
                && conn.to_edge.is_empty()
            {
                self.conns.remove(&id);
            }
        }
        moved
    }

    fn on_hub_event(&mut self, event: HubEvent) {
        match event {
            HubEvent::Delivered {
                node,
                store_id,
                objects,
            } => {
                let n = node_index(&node);
                self.observe_store(n, store_id);
                for d in objects {
                    let resource = d.key.to_string();
                    self.control
                        .unflushed
                        .push(((n, resource), d.resource_version));
                }
            }
            HubEvent::Upstream {
                node,
                store_id,
                message,
            } => {
                let n = node_index(&node);
                self.observe_store(n, store_id);
                let seq = message.header.seq;
                let taken = &mut self.control.upstream[n];
                if taken.last().is_none_or(|&last| seq > last) {
                    taken.push(seq);
                    self.stats.upstream += 1;
                }
                self.hub.handle_upstream_committed(&node, store_id, seq);
            }
            HubEvent::ResyncNeeded { node } => self.resync(node_index(&node)),
            HubEvent::Connected { node, store_id, .. } => {
                self.observe_store(node_index(&node), store_id);
            }
            HubEvent::Disconnected { .. } => {}
        }
    }

    fn on_link_event(&mut self, i: usize, event: LinkEvent) {
        let edge = &mut self.edges[i];
        match event {
            LinkEvent::Downstream(message) => {
                edge.received_seq = edge.received_seq.max(message.header.seq);
                edge.pending.push(message);
            }
            LinkEvent::UpstreamAcked { seq } => {
                edge.outbox.retain(|&s, _| s > seq);
            }
            LinkEvent::Disconnected { .. } => {
                if let Some(id) = edge.conn.take()
                    && let Some(conn) = self.conns.get_mut(&id)
                {
                    conn.to_hub.push_back((self.now, None));
                }
            }
            LinkEvent::Connected { .. } => {}
        }
    }

    /// Applies everything pending in one transaction, then acknowledges.
    fn commit(&mut self, i: usize) {
        let edge = &mut self.edges[i];
        let mut highest = edge.committed_seq;
        for message in edge.pending.drain(..) {
            let resource = message.route.resource.clone();
            let rv = message.header.resource_version;
            let deleted = message.route.operation == "delete";
            let current = edge.store.get(&resource).map_or(0, |(v, _)| *v);
            if rv > current || self.plant.no_version_check {
                if rv < current {
                    self.violations.push(format!(
                        "{} applied {resource} version {rv} after version {current}",
                        edge.name
                    ));
                }
                edge.store.insert(resource, (rv, deleted));
                self.stats.applied += 1;
            }
            highest = highest.max(message.header.seq);
        }
        edge.committed_seq = highest;
        edge.link.handle_committed(highest);
    }

    fn converged(&self) -> bool {
        self.edges.iter().enumerate().all(|(i, edge)| {
            edge.outbox.is_empty() && edge.pending.is_empty() && self.differences(i).is_empty()
        })
    }

    /// Where node `i`'s store differs from the desired state.
    fn differences(&self, i: usize) -> Vec<String> {
        let edge = &self.edges[i];
        let want: BTreeMap<&String, u64> = self
            .control
            .desired
            .range((i, String::new())..(i + 1, String::new()))
            .filter(|(_, (_, deleted))| !deleted)
            .map(|((_, r), (rv, _))| (r, *rv))
            .collect();
        let have: BTreeMap<&String, u64> = edge
            .store
            .iter()
            .filter(|(_, (_, deleted))| !deleted)
            .map(|(r, (rv, _))| (r, *rv))
            .collect();
        if want == have {
            return Vec::new();
        }
        vec![format!("{} holds {have:?}, wants {want:?}", edge.name)]
    }

    fn check(&self) -> Vec<String> {
        let mut problems = self.violations.clone();
        for i in 0..self.edges.len() {
            problems.extend(self.differences(i));
            let edge = &self.edges[i];
            let expected: Vec<u64> = (1..edge.next_outbox_seq).collect();
            if self.control.upstream[i] != expected {
                problems.push(format!(
                    "{}: control took upstream {:?}, the outbox wrote 1..{}",
                    edge.name, self.control.upstream[i], edge.next_outbox_seq
                ));
            }
        }
        problems
    }
}

fn node_index(node: &str) -> usize {
    node.trim_start_matches("edge-")
        .parse()
        .expect("simulated node name")
}

/// Splits `bytes` into 1–4 chunks arriving in order from `at` on.
fn push_chunks(rng: &mut Rng, pipe: &mut Pipe, at: Millis, bytes: Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    let mut at = at.max(pipe.back().map_or(0, |(t, _)| *t));
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let n = if rng.chance(500) {
            rest.len()
        } else {
            1 + rng.below(rest.len() as u64) as usize
        };
        pipe.push_back((at, Some(rest[..n].to_vec())));
        rest = &rest[n..];
        at += rng.below(3);
    }
}

/// Runs one seed; returns the problems found (empty when all invariants hold).
fn run(seed: u64, plant: Plant) -> Vec<String> {
    let mut world = World::new(seed, plant);
    for _ in 0..1_500 {
        world.chaos_step();
        world.tick();
    }
    // Calm: no more faults or changes; let the fleet settle.
    let deadline = world.now + 300_000;
    while world.now < deadline && !world.converged() {
        world.tick();
    }
    if std::env::var_os("SIM_SEED").is_some() {
        eprintln!(
            "seed {seed}: {} nodes, {} ms virtual, {:?}",
            world.edges.len(),
            world.now,
            world.stats
        );
    }
    let mut problems = world.check();
    if !world.converged() && problems.is_empty() {
        problems.push("did not settle within 300 s of virtual time".into());
    }
    problems
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn fleet_converges_under_faults() {
    let seeds: Vec<u64> = match env("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env("SIM_FIRST_SEED").unwrap_or(1);
            (first..first + env("SIM_SEEDS").unwrap_or(300)).collect()
        }
    };
    let mut failed = Vec::new();
    for &seed in &seeds {
        let problems = run(seed, Plant::default());
        if !problems.is_empty() {
            failed.push(seed);
            eprintln!("seed {seed} failed (replay: SIM_SEED={seed}):");
            for p in problems.iter().take(5) {
                eprintln!("  {p}");
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed: {failed:?}",
        failed.len(),
        seeds.len()
    );
}

#[test]
fn planted_bug_without_version_check_is_found() {
    let plant = Plant {
        no_version_check: true,
        ..Plant::default()
    };
    let found = (1..=200).find(|&seed| !run(seed, plant).is_empty());
    assert!(
        found.is_some(),
        "200 seeds never noticed an edge applying stale versions"
    );
}

#[test]
fn planted_bug_without_store_identity_is_found() {
    let plant = Plant {
        no_store_identity: true,
        ..Plant::default()
    };
    let found = (1..=200).find(|&seed| !run(seed, plant).is_empty());
    assert!(
        found.is_some(),
        "200 seeds never noticed a wiped store taken for the old one"
    );
}

#[test]
fn planted_bug_resuming_from_received_is_found() {
    let plant = Plant {
        resume_from_received: true,
        ..Plant::default()
    };
    let found = (1..=200).find(|&seed| !run(seed, plant).is_empty());
    assert!(
        found.is_some(),
        "200 seeds never noticed an edge resuming past its commits"
    );
}
