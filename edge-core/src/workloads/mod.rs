//! Edged's glue: runs the node's pods through the CRI.
//!
//! It lives on a thread of its own with a current-thread tokio runtime,
//! because tonic (the CRI's gRPC stack) needs tokio and edgecore's main
//! thread runs monoio. The thread owns the `edged::Edged` core and the CRI
//! client; it reads pods, ConfigMaps and Secrets from the store (LMDB
//! allows readers on any thread), is told of committed changes through a
//! channel, and sends pod statuses upstream through the durable outbox.
//! Every second it lists the runtime's containers, as the kubelet's PLEG
//! does, so an exit is noticed within a second.

mod cri;
pub(crate) mod node;
mod probe;
mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use clock::unix_ms;
use edged::{Edged, EdgedConfig, Objects, Op, Pod, PodKey};
use schema::kinds;
use schema::records::ObjectKey;
use schema::{Header, Message, Route};
use serde_json::Value;
use tokio::sync::mpsc;

pub use cri::{Cri, CriError, ExecRequest};

use crate::config;
use crate::hooks::Upstream;
use crate::store::{Change, ChangeType, Store};

/// What edgecore knows of the container runtime, for the node's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Runtime {
    /// Not asked yet.
    #[default]
    Unknown,
    /// Answering: its name and version.
    Up { name: String, version: String },
    /// Not answering, with why: the node is not Ready.
    Down(String),
    /// None installed (no socket at the endpoint): a gateway that runs
    /// only devices. The node stays Ready; pods wait, with why.
    Absent(String),
}

/// The runtime's answer to an exec: its streaming URL, `None` when the
/// container does not run, or why the runtime could not be asked.
pub type ExecAnswer = Result<Option<String>, String>;

#[derive(Debug)]
enum Event {
    Pod(Vec<u8>),
    PodDeleted(PodKey),
    Namespace(String),
    Exec(ExecRequest, tokio::sync::oneshot::Sender<ExecAnswer>),
}

/// The handle the daemon keeps: feeds committed changes to Edged's thread
/// and reads the runtime's state.
#[derive(Debug, Clone)]
pub struct Workloads {
    events: mpsc::UnboundedSender<Event>,
    runtime: Arc<Mutex<Runtime>>,
}

impl Workloads {
    /// Starts Edged's thread.
    pub fn start(
        config: &config::Edged,
        host_ip: &str,
        store: Store,
        upstream: Upstream,
    ) -> std::io::Result<Workloads> {
        if config.cgroup_driver != "cgroupfs" {
            tracing::warn!(
                driver = %config.cgroup_driver,
                "only the cgroupfs driver is supported: pods get the runtime's default cgroup parent"
            );
        }
        let (events, rx) = mpsc::unbounded_channel();
        let runtime = Arc::new(Mutex::new(Runtime::Unknown));
        let core = Edged::new(EdgedConfig {
            host_ip: host_ip.to_owned(),
            runtime_name: "containerd".to_owned(),
            log_root: config.pod_logs_dir.clone(),
            root_directory: config.root_directory.clone(),
            resync_ms: RESYNC.as_millis() as u64,
        });
        let runner = Runner {
            config: config.clone(),
            core,
            store,
            upstream,
            runtime: runtime.clone(),
            cri: None,
            seen: HashMap::new(),
        };
        std::thread::Builder::new()
            .name("edged".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(runner.run(rx)),
                    Err(e) => tracing::error!("Edged cannot start its runtime: {e}"),
                }
            })?;
        Ok(Workloads { events, runtime })
    }

    /// Committed changes: pods to run or stop, ConfigMaps and Secrets their
    /// env and volumes read.
    pub fn handle_changes(&self, changes: &[Change]) {
        for c in changes {
            let key = &c.object.key;
            let event = match key.kind.as_str() {
                kinds::POD if c.change == ChangeType::Deleted => {
                    Event::PodDeleted(PodKey::new(&key.namespace, &key.name))
                }
                kinds::POD => Event::Pod(c.object.data.clone()),
                kinds::CONFIGMAP | kinds::SECRET => Event::Namespace(key.namespace.clone()),
                _ => continue,
            };
            let _ = self.events.send(event);
        }
    }

    /// Asks the runtime to prepare `req` (CRI `Exec`); awaitable on any
    /// executor.
    pub async fn exec(&self, req: ExecRequest) -> ExecAnswer {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.events.send(Event::Exec(req, tx)).is_err() {
            return Err("Edged has stopped".to_owned());
        }
        rx.await
            .unwrap_or_else(|_| Err("Edged dropped the request".to_owned()))
    }

    pub fn runtime(&self) -> Runtime {
        self.runtime.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

struct Runner {
    config: config::Edged,
    core: Edged,
    store: Store,
    upstream: Upstream,
    runtime: Arc<Mutex<Runtime>>,
    cri: Option<Cri>,
    /// The containers (id, state) of each pod at the last relist.
    seen: HashMap<PodKey, Vec<(String, i32)>>,
}

/// How often the runtime's containers are listed (the kubelet's PLEG period).
const RELIST: Duration = Duration::from_secs(1);
/// How often a pod is synced when neither its spec, its objects, its
/// containers (the relist) nor its probes changed: the kubelet's
/// `syncFrequency`.
const RESYNC: Duration = Duration::from_secs(60);
/// How often an unreachable runtime is tried again.
const RETRY: Duration = Duration::from_secs(5);

impl Runner {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        self.load_pods();
        let mut next_relist = tokio::time::Instant::now();
        let (done, mut finished) = mpsc::unbounded_channel();
        loop {
            if self.cri.is_none() {
                self.connect().await;
            }
            if self.cri.is_some() {
                if tokio::time::Instant::now() >= next_relist {
                    self.relist().await;
                    next_relist = tokio::time::Instant::now() + RELIST;
                }
                self.start_work(&done);
            }
            self.send_statuses();
            let now = unix_ms();
            let due = self
                .core
                .poll_timeout()
                .map_or(RELIST, |at| Duration::from_millis(at.saturating_sub(now)));
            let wait = if self.cri.is_some() {
                due.min(next_relist.saturating_duration_since(tokio::time::Instant::now()))
            } else {
                RETRY
            };
            tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => {
                        self.handle(event);
                        while let Ok(event) = rx.try_recv() {
                            self.handle(event);
                        }
                    }
                    None => return,
                },
                Some(work) = finished.recv() => {
                    self.finish(work, &done);
                    while let Ok(work) = finished.try_recv() {
                        self.finish(work, &done);
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Every sync and probe now due, each on a task of its own, as the
    /// kubelet's pod workers: a slow image pull or probe holds up no other
    /// pod. What they found comes back on `done`.
    fn start_work(&mut self, done: &mpsc::UnboundedSender<Done>) {
        let Some(cri) = &self.cri else { return };
        while let Some(key) = self.core.poll_sync(unix_ms()) {
            let (mut cri, done) = (cri.clone(), done.clone());
            tokio::spawn(async move {
                let observed = cri.observe(&key).await;
                let _ = done.send(Done::Observed(key, observed));
            });
        }
        while let Some(req) = self.core.poll_probe(unix_ms()) {
            let (cri, done) = (cri.clone(), done.clone());
            tokio::spawn(async move {
                let ok = probe::run(cri, &req).await;
                let _ = done.send(Done::Probed(req, ok));
            });
        }
    }

    /// What a task found: a pod observed (its operations then run on a
    /// task of their own), a batch run, a probe's outcome.
    fn finish(&mut self, work: Done, done: &mpsc::UnboundedSender<Done>) {
        let now = unix_ms();
        match work {
            Done::Observed(key, Err(e)) => {
                self.core.handle_done(&key, now);
                self.runtime_down(e);
            }
            Done::Observed(key, Ok(observed)) => {
                let objects = StoreObjects(&self.store);
                let ops = self.core.handle_observed(&key, &observed, &objects, now);
                if ops.is_empty() {
                    return;
                }
                let Some(cri) = self.cri.clone() else {
                    return self.core.handle_done(&key, now);
                };
                let done = done.clone();
                tokio::spawn(async move {
                    let failure = run_ops(cri, &key, &ops).await;
                    let _ = done.send(Done::Ran(key, failure));
                });
            }
            Done::Ran(key, failure) => {
                if let Some(f) = failure {
                    self.core.handle_failed(&key, f, now);
                }
                self.core.handle_done(&key, now);
            }
            Done::Probed(req, ok) => self.core.handle_probe_result(&req, ok, now),
        }
    }

    fn handle(&mut self, event: Event) {
        let now = unix_ms();
        match event {
            Event::Pod(data) => match Pod::from_json(&data) {
                Ok(pod) => self.core.handle_pod(pod, now),
                Err(e) => tracing::warn!("a stored pod cannot run: {e}"),
            },
            Event::PodDeleted(key) => self.core.handle_pod_deleted(&key, now),
            Event::Namespace(ns) => self.core.handle_namespace_changed(&ns, now),
            Event::Exec(req, reply) => {
                let Some(mut cri) = self.cri.clone() else {
                    let _ = reply.send(Err("the container runtime is not reachable".to_owned()));
                    return;
                };
                tokio::spawn(async move {
                    let answer = cri.exec_url(&req).await.map_err(|e| e.to_string());
                    let _ = reply.send(answer);
                });
            }
        }
    }

    /// The pods already in the store when edgecore starts.
    fn load_pods(&mut self) {
        match self.store.list(kinds::POD, None) {
            Ok(pods) => {
                for o in pods {
                    self.handle(Event::Pod(o.data));
                }
            }
            Err(e) => tracing::error!("Edged cannot read the stored pods: {e}"),
        }
    }

    /// Asks the runtime its version; while it does not answer, pods wait.
    async fn connect(&mut self) {
        let c = &self.config;
        let timeout = Duration::from_secs(c.runtime_request_timeout.max(1));
        let result = match Cri::new(
            &c.remote_runtime_endpoint,
            &c.remote_image_endpoint,
            timeout,
            "",
        ) {
            Ok(mut cri) => cri.version().await.map(|v| (cri, v)),
            Err(e) => Err(e),
        };
        match result {
            Ok((mut cri, (name, version))) => {
                tracing::info!(endpoint = %c.remote_runtime_endpoint, %name, %version, "container runtime up");
                match cri.has_image(&c.pod_sandbox_image).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(
                        image = %c.pod_sandbox_image,
                        "the sandbox image is not present: pods cannot start until it is imported"
                    ),
                    Err(e) => tracing::warn!("cannot check the sandbox image: {e}"),
                }
                self.set_runtime(Runtime::Up { name, version });
                match cri.pods().await {
                    Ok(keys) => keys
                        .iter()
                        .for_each(|k| self.core.handle_found(k, unix_ms())),
                    Err(e) => tracing::warn!("cannot list the runtime's pods: {e}"),
                }
                self.cri = Some(cri);
            }
            Err(e) => self.runtime_down(e),
        }
    }

    fn runtime_down(&mut self, e: CriError) {
        let endpoint = &self.config.remote_runtime_endpoint;
        let socket = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
        let (state, message) = if std::path::Path::new(socket).exists() {
            let m = format!("container runtime at {endpoint} is not reachable: {e}");
            (Runtime::Down(m.clone()), m)
        } else {
            let m = format!("no container runtime at {endpoint}: pods cannot run on this node");
            (Runtime::Absent(m.clone()), m)
        };
        if self.runtime() != state {
            tracing::warn!("{message}; pods stay Pending until it answers");
        }
        self.set_runtime(state);
        self.cri = None;
        self.core.handle_runtime_down(&message, unix_ms());
    }

    fn runtime(&self) -> Runtime {
        self.runtime.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn set_runtime(&self, r: Runtime) {
        *self.runtime.lock().unwrap_or_else(|p| p.into_inner()) = r;
    }

    /// The PLEG: pods whose containers changed are synced now.
    async fn relist(&mut self) {
        let Some(cri) = self.cri.as_mut() else { return };
        let states = match cri.container_states().await {
            Ok(s) => s,
            Err(e) => return self.runtime_down(e),
        };
        let mut now_seen: HashMap<PodKey, Vec<(String, i32)>> = HashMap::new();
        for (key, id, state) in states {
            now_seen.entry(key).or_default().push((id, state));
        }
        for v in now_seen.values_mut() {
            v.sort();
        }
        let now = unix_ms();
        for (key, v) in &now_seen {
            if self.seen.get(key) != Some(v) {
                self.core.handle_found(key, now);
            }
        }
        for key in self.seen.keys().filter(|k| !now_seen.contains_key(*k)) {
            self.core.handle_changed(key, now);
        }
        self.seen = now_seen;
    }

    fn send_statuses(&mut self) {
        while let Some((key, status)) = self.core.poll_status() {
            let phase = status["phase"].as_str().unwrap_or("").to_owned();
            tracing::info!(pod = %key, %phase, "pod status");
            if !self
                .upstream
                .send(vec![pod_status(&key, &status, unix_ms())])
            {
                return;
            }
        }
    }
}

/// What a task of Edged's thread hands back to its loop.
#[derive(Debug)]
enum Done {
    Observed(PodKey, Result<edged::Observed, CriError>),
    Ran(PodKey, Option<edged::Failure>),
    Probed(edged::ProbeRequest, bool),
}

/// Runs a pod's batch in order, stopping at the first failure.
async fn run_ops(mut cri: Cri, key: &PodKey, ops: &[Op]) -> Option<edged::Failure> {
    for op in ops {
        tracing::debug!(pod = %key, ?op, "runtime operation");
        let result = match op {
            Op::WriteVolumes(vs) => {
                vs.iter()
                    .try_for_each(volumes::write)
                    .map_err(|e| edged::Failure {
                        container: None,
                        reason: "FailedMount".into(),
                        message: e.to_string(),
                    })
            }
            op => cri.run(op).await,
        };
        if let Err(f) = result {
            tracing::warn!(pod = %key, reason = %f.reason, "{}", f.message);
            return Some(f);
        }
    }
    None
}

/// The upstream message that carries a pod's status.
fn pod_status(key: &PodKey, status: &Value, now_ms: u64) -> Message {
    Message {
        header: Header {
            id: format!("podstatus-{}-{}-{now_ms}", key.namespace, key.name),
            timestamp_ms: now_ms,
            ..Header::default()
        },
        route: Route {
            source: "edged".to_owned(),
            destination: String::new(),
            group: "resource".to_owned(),
            operation: "update".to_owned(),
            resource: format!("{}/podstatus/{}", key.namespace, key.name),
        },
        content: status.to_string().into_bytes(),
    }
}

/// ConfigMaps and Secrets as MetaManager stores them.
struct StoreObjects<'a>(&'a Store);

impl StoreObjects<'_> {
    fn data(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let o = self.0.get(&ObjectKey::new(kind, ns, name)).ok()??;
        serde_json::from_slice(&o.data).ok()
    }
}

impl Objects for StoreObjects<'_> {
    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let v = self.data(kinds::CONFIGMAP, namespace, name)?;
        let mut out = BTreeMap::new();
        for (k, v) in v["data"].as_object().into_iter().flatten() {
            out.insert(k.clone(), v.as_str().unwrap_or("").as_bytes().to_vec());
        }
        for (k, v) in v["binaryData"].as_object().into_iter().flatten() {
            if let Ok(bytes) =
                base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or(""))
            {
                out.insert(k.clone(), bytes);
            }
        }
        Some(out)
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let v = self.data(kinds::SECRET, namespace, name)?;
        let mut out = BTreeMap::new();
        for (k, v) in v["data"].as_object().into_iter().flatten() {
            if let Ok(bytes) =
                base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or(""))
            {
                out.insert(k.clone(), bytes);
            }
        }
        for (k, v) in v["stringData"].as_object().into_iter().flatten() {
            out.insert(k.clone(), v.as_str().unwrap_or("").as_bytes().to_vec());
        }
        Some(out)
    }
}
