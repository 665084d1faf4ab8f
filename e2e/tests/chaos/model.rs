//! The desired state the test writes as a manifest directory, and what
//! each node should therefore hold, by the rules `cloudcontrol` documents:
//! a node gets its Node, the Pods bound to it, the ConfigMaps and Secrets
//! those Pods reference (when they exist), the Devices bound to it and
//! their DeviceModel.
//!
//! Every object the test changes carries the label [`VERSION_LABEL`], set
//! to a counter that grows with every change, so an edge's copy shows which
//! change it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The label that carries an object's change counter.
pub(crate) const VERSION_LABEL: &str = "chaos-version";
pub(crate) const NAMESPACE: &str = "default";
/// The DeviceModel every Device references (never changed).
pub(crate) const MODEL: &str = "thermometer";

const PODS: usize = 24;
const CONFIGMAPS: usize = 6;
const SECRETS: usize = 6;
const DEVICES: usize = 10;

/// A small deterministic generator (splitmix64): the schedule is a function
/// of the seed alone.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

/// The identity of an object as the MetaServer lists it: kind (lowercase
/// singular), namespace, name.
pub(crate) type Key = (&'static str, String, String);

/// What one node should hold: key → the value of [`VERSION_LABEL`]
/// (`None` for objects the test never changes).
pub(crate) type Holding = BTreeMap<Key, Option<String>>;

#[derive(Debug, Clone)]
struct Pod {
    node: usize,
    configmap: usize,
    secret: usize,
    version: u64,
}

#[derive(Debug, Clone, Copy)]
struct Device {
    node: usize,
    version: u64,
}

/// The kinds of manifest change, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Change {
    Create(&'static str),
    Update(&'static str),
    Delete(&'static str),
}

/// The desired state and the manifest directory that holds it.
pub(crate) struct Model {
    dir: PathBuf,
    pub(crate) nodes: Vec<String>,
    /// Nodes with a thermometer that reports over MQTT.
    reporting: usize,
    counter: u64,
    pods: BTreeMap<usize, Pod>,
    configmaps: BTreeMap<usize, u64>,
    secrets: BTreeMap<usize, u64>,
    devices: BTreeMap<usize, Device>,
    /// The thermometers, one per reporting node (never deleted or moved).
    thermometers: Vec<u64>,
}

impl Model {
    /// A first desired state: every node, a thermometer on each of the
    /// first `reporting` nodes, and some of each kind, written to `dir`.
    pub(crate) fn new(dir: &Path, nodes: Vec<String>, reporting: usize, rng: &mut Rng) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut m = Self {
            dir: dir.to_owned(),
            nodes,
            reporting,
            counter: 0,
            pods: BTreeMap::new(),
            configmaps: BTreeMap::new(),
            secrets: BTreeMap::new(),
            devices: BTreeMap::new(),
            thermometers: Vec::new(),
        };
        for node in &m.nodes {
            m.write(
                &format!("node-{node}"),
                &format!(
                    "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels:\n    \
                     node-role.kubernetes.io/edge: \"\"\n"
                ),
            );
        }
        m.write(
            &format!("devicemodel-{MODEL}"),
            &format!(
                "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata:\n  \
                 name: {MODEL}\n  namespace: {NAMESPACE}\nspec:\n  protocol: modbus\n  \
                 properties:\n    - name: temperature\n      type: FLOAT\n      \
                 accessMode: ReadOnly\n"
            ),
        );
        for i in 0..reporting {
            m.counter += 1;
            m.thermometers.push(m.counter);
            m.write_thermometer(i);
        }
        for i in 0..CONFIGMAPS / 2 {
            m.counter += 1;
            m.configmaps.insert(i, m.counter);
            m.write_configmap(i);
        }
        for i in 0..SECRETS / 2 {
            m.counter += 1;
            m.secrets.insert(i, m.counter);
            m.write_secret(i);
        }
        for i in 0..PODS / 2 {
            m.counter += 1;
            let pod = Pod {
                node: rng.below(m.nodes.len()),
                configmap: rng.below(CONFIGMAPS),
                secret: rng.below(SECRETS),
                version: m.counter,
            };
            m.pods.insert(i, pod);
            m.write_pod(i);
        }
        for i in 0..DEVICES / 2 {
            m.counter += 1;
            let d = Device {
                node: rng.below(m.nodes.len()),
                version: m.counter,
            };
            m.devices.insert(i, d);
            m.write_device(i);
        }
        m
    }

    /// The thermometer of reporting node `i`.
    pub(crate) fn thermometer(&self, i: usize) -> String {
        format!("thermo-{}", self.nodes[i])
    }

    /// One random create, update or delete.
    pub(crate) fn change(&mut self, rng: &mut Rng) -> Change {
        self.counter += 1;
        let v = self.counter;
        let nodes = self.nodes.len();
        match rng.below(10) {
            0..=3 => {
                let (present, absent) = split(&self.pods, PODS);
                match choose(rng, &present, &absent) {
                    Op::Create(i) => {
                        let pod = Pod {
                            node: rng.below(nodes),
                            configmap: rng.below(CONFIGMAPS),
                            secret: rng.below(SECRETS),
                            version: v,
                        };
                        self.pods.insert(i, pod);
                        self.write_pod(i);
                        Change::Create("pod")
                    }
                    Op::Update(i) => {
                        let pod = self.pods.get_mut(&i).unwrap();
                        pod.version = v;
                        // Sometimes rebound to another node, or pointed at
                        // another ConfigMap or Secret.
                        match rng.below(4) {
                            0 => pod.node = rng.below(nodes),
                            1 => pod.configmap = rng.below(CONFIGMAPS),
                            2 => pod.secret = rng.below(SECRETS),
                            _ => {}
                        }
                        self.write_pod(i);
                        Change::Update("pod")
                    }
                    Op::Delete(i) => {
                        self.pods.remove(&i);
                        self.remove(&format!("pod-{i}"));
                        Change::Delete("pod")
                    }
                }
            }
            4..=5 => self.change_data(rng, v, true),
            6..=7 => self.change_data(rng, v, false),
            8 => {
                let (present, absent) = split(&self.devices, DEVICES);
                match choose(rng, &present, &absent) {
                    Op::Create(i) => {
                        let d = Device {
                            node: rng.below(nodes),
                            version: v,
                        };
                        self.devices.insert(i, d);
                        self.write_device(i);
                        Change::Create("device")
                    }
                    Op::Update(i) => {
                        let d = self.devices.get_mut(&i).unwrap();
                        d.version = v;
                        if rng.below(3) == 0 {
                            d.node = rng.below(nodes);
                        }
                        self.write_device(i);
                        Change::Update("device")
                    }
                    Op::Delete(i) => {
                        self.devices.remove(&i);
                        self.remove(&format!("device-dev-{i}"));
                        Change::Delete("device")
                    }
                }
            }
            _ => {
                // A thermometer's desired value changes.
                let i = rng.below(self.reporting);
                self.thermometers[i] = v;
                self.write_thermometer(i);
                Change::Update("device")
            }
        }
    }

    /// A create, update or delete of a ConfigMap (or a Secret).
    fn change_data(&mut self, rng: &mut Rng, v: u64, configmap: bool) -> Change {
        let (set, pool, kind) = if configmap {
            (&mut self.configmaps, CONFIGMAPS, "configmap")
        } else {
            (&mut self.secrets, SECRETS, "secret")
        };
        let (present, absent) = split(set, pool);
        let (i, change) = match choose(rng, &present, &absent) {
            Op::Create(i) => {
                set.insert(i, v);
                (i, Change::Create(kind))
            }
            Op::Update(i) => {
                set.insert(i, v);
                (i, Change::Update(kind))
            }
            Op::Delete(i) => {
                set.remove(&i);
                self.remove(&format!("{kind}-{i}"));
                return Change::Delete(kind);
            }
        };
        if configmap {
            self.write_configmap(i);
        } else {
            self.write_secret(i);
        }
        change
    }

    /// What node `n` should hold.
    pub(crate) fn holding(&self, n: usize) -> Holding {
        let mut h = Holding::new();
        let key = |kind: &'static str, name: String| (kind, NAMESPACE.to_owned(), name);
        h.insert(key("node", self.nodes[n].clone()), None);
        for (i, pod) in self.pods.iter().filter(|(_, p)| p.node == n) {
            h.insert(
                key("pod", format!("pod-{i}")),
                Some(pod.version.to_string()),
            );
            if let Some(v) = self.configmaps.get(&pod.configmap) {
                h.insert(
                    key("configmap", format!("cm-{}", pod.configmap)),
                    Some(v.to_string()),
                );
            }
            if let Some(v) = self.secrets.get(&pod.secret) {
                h.insert(
                    key("secret", format!("secret-{}", pod.secret)),
                    Some(v.to_string()),
                );
            }
        }
        let mut devices = false;
        for (i, d) in self.devices.iter().filter(|(_, d)| d.node == n) {
            h.insert(
                key("device", format!("dev-{i}")),
                Some(d.version.to_string()),
            );
            devices = true;
        }
        if n < self.reporting {
            h.insert(
                key("device", self.thermometer(n)),
                Some(self.thermometers[n].to_string()),
            );
            devices = true;
        }
        if devices {
            h.insert(key("devicemodel", MODEL.to_owned()), None);
        }
        h
    }

    fn write_pod(&self, i: usize) {
        let p = &self.pods[&i];
        self.write(
            &format!("pod-{i}"),
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{i}\n  namespace: {NAMESPACE}\n  \
                 labels:\n    {VERSION_LABEL}: \"{v}\"\nspec:\n  nodeName: {node}\n  containers:\n    \
                 - name: app\n      image: busybox:1.36\n      envFrom:\n        - configMapRef:\n            \
                 name: cm-{cm}\n      env:\n        - name: TOKEN\n          valueFrom:\n            \
                 secretKeyRef:\n              name: secret-{s}\n              key: token\n",
                v = p.version,
                node = self.nodes[p.node],
                cm = p.configmap,
                s = p.secret,
            ),
        );
    }

    fn write_configmap(&self, i: usize) {
        let v = self.configmaps[&i];
        self.write(
            &format!("configmap-{i}"),
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n  namespace: {NAMESPACE}\n  \
                 labels:\n    {VERSION_LABEL}: \"{v}\"\ndata:\n  version: \"{v}\"\n"
            ),
        );
    }

    fn write_secret(&self, i: usize) {
        let v = self.secrets[&i];
        self.write(
            &format!("secret-{i}"),
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: secret-{i}\n  namespace: {NAMESPACE}\n  \
                 labels:\n    {VERSION_LABEL}: \"{v}\"\ntype: Opaque\nstringData:\n  token: \"t{v}\"\n"
            ),
        );
    }

    fn write_device(&self, i: usize) {
        let d = self.devices[&i];
        self.write(
            &format!("device-dev-{i}"),
            &device_yaml(&format!("dev-{i}"), &self.nodes[d.node], d.version),
        );
    }

    fn write_thermometer(&self, i: usize) {
        let name = self.thermometer(i);
        self.write(
            &format!("device-{name}"),
            &device_yaml(&name, &self.nodes[i], self.thermometers[i]),
        );
    }

    /// Replaces `file.yaml` atomically (a rename), so that `cloudcontrol`
    /// never reads half a file.
    fn write(&self, file: &str, text: &str) {
        let partial = self.dir.join(format!("{file}.partial"));
        std::fs::write(&partial, text).unwrap();
        std::fs::rename(partial, self.dir.join(format!("{file}.yaml"))).unwrap();
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.dir.join(format!("{file}.yaml"))).unwrap();
    }
}

fn device_yaml(name: &str, node: &str, version: u64) -> String {
    format!(
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata:\n  name: {name}\n  \
         namespace: {NAMESPACE}\n  labels:\n    {VERSION_LABEL}: \"{version}\"\nspec:\n  \
         nodeName: {node}\n  deviceModelRef:\n    name: {MODEL}\n  protocol:\n    \
         protocolName: modbus\n  properties:\n    - name: temperature\n      desired:\n        \
         value: \"{version}\"\n"
    )
}

enum Op {
    Create(usize),
    Update(usize),
    Delete(usize),
}

/// The pool's indices present in `set` and those absent.
fn split<T>(set: &BTreeMap<usize, T>, pool: usize) -> (Vec<usize>, Vec<usize>) {
    (0..pool).partition(|i| set.contains_key(i))
}

/// Mostly updates; creates and deletes keep the pool about half full.
fn choose(rng: &mut Rng, present: &[usize], absent: &[usize]) -> Op {
    let roll = rng.below(4);
    if (roll == 0 || present.is_empty())
        && let Some(&i) = rng.pick(absent)
    {
        return Op::Create(i);
    }
    let i = *rng
        .pick(present)
        .expect("a pool is never both empty and full");
    if roll == 1 && present.len() > 1 {
        Op::Delete(i)
    } else {
        Op::Update(i)
    }
}
