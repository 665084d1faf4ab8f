//! Shared by the integration tests: a real `cloudcontrol` child process,
//! and the shard end of its ring files, played by the test.
// Each test file uses part of this module.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use schema::records::{self, DownRecord, ObjectKey, UpRecord};
use shm::{RingFile, RingSize, Role};

pub mod https;

pub const RING_BYTES: usize = 1 << 20;

/// A running cloudcontrol, killed with SIGKILL when dropped.
pub struct Cloud {
    pub child: Child,
    pub certs: String,
    pub stderr: PathBuf,
}

impl Cloud {
    pub fn start(manifests: &Path, data: &Path, rings: &Path, shards: u16) -> Cloud {
        let mut source = Command::new(env!("CARGO_BIN_EXE_cloudcontrol"));
        source.arg("--manifests").arg(manifests);
        Cloud::start_with(source, data, rings, shards)
    }

    /// Starts `cmd` (cloudcontrol with its source of desired state given)
    /// with the test's data dir, rings and addresses.
    pub fn start_with(mut cmd: Command, data: &Path, rings: &Path, shards: u16) -> Cloud {
        std::fs::create_dir_all(data).unwrap();
        let stderr = data.join(format!("stderr-{}.log", std::process::id()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .unwrap();
        let mut child = cmd
            .arg("--data-dir")
            .arg(data)
            .arg("--ring-dir")
            .arg(rings)
            .args(["--shards", &shards.to_string()])
            .args(["--ring-bytes", &RING_BYTES.to_string()])
            .args(["--cert-address", "127.0.0.1:0", "--poll-interval-ms", "50"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "no ready line; stderr: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                )
            });
        let rest = line.strip_prefix("cloudcontrol ready certs=").expect(&line);
        let certs = rest.split_whitespace().next().unwrap().to_owned();
        assert!(rest.ends_with(&format!("shards={shards}")), "{line}");
        Cloud {
            child,
            certs,
            stderr,
        }
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shards' side of the ring files.
pub struct Hub {
    pub files: Vec<RingFile>,
}

impl Hub {
    pub fn open(dir: &Path, shards: u16) -> Hub {
        std::fs::create_dir_all(dir).unwrap();
        let files = (0..usize::from(shards))
            .map(|i| {
                RingFile::open(
                    &shm::ring_path(dir, i),
                    RingSize::Configured(RING_BYTES),
                    Role::Shard,
                )
                .unwrap()
            })
            .collect();
        Hub { files }
    }

    /// Every record waiting now, with its shard.
    pub fn take_all(&self) -> Vec<(u16, DownRecord)> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            while f.pop_and_wake(&mut buf).unwrap() {
                out.push((i as u16, records::from_bytes::<DownRecord>(&buf).unwrap()));
            }
        }
        out
    }

    /// Takes records until `done` holds for what was taken, or panics after
    /// 20 s.
    pub fn take_until(
        &self,
        done: impl Fn(&[(u16, DownRecord)]) -> bool,
    ) -> Vec<(u16, DownRecord)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        loop {
            got.extend(self.take_all());
            if done(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "timed out; got {got:#?}");
            self.files[0].wait_inbound(Duration::from_millis(20));
        }
    }

    pub fn push(&self, shard: u16, record: &UpRecord) {
        self.files[usize::from(shard)]
            .push_and_wake(&records::to_bytes(record))
            .unwrap();
    }
}

/// A downstream record, summarised: (node, operation, kind/name, rv).
pub fn downstream(
    records: &[(u16, DownRecord)],
    shards: u16,
) -> Vec<(String, String, String, u64)> {
    let mut out: Vec<_> = records
        .iter()
        .filter_map(|(shard, r)| match r {
            DownRecord::Downstream {
                node_id,
                key,
                message,
            } => {
                assert_eq!(
                    *shard,
                    hub_core::shard_of(node_id, shards),
                    "{node_id} on the wrong shard"
                );
                assert_eq!(message.route.resource, key.to_string());
                assert_eq!(message.route.source, "edgecontroller");
                assert_eq!(message.header.resource_version, rv_of(message));
                Some((
                    node_id.clone(),
                    message.route.operation.clone(),
                    format!("{}/{}", key.kind, key.name),
                    message.header.resource_version,
                ))
            }
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// The resourceVersion inside a message's content (the header's for a
/// delete, whose content is empty).
fn rv_of(m: &schema::Message) -> u64 {
    if m.content.is_empty() {
        return m.header.resource_version;
    }
    let v: serde_json::Value = serde_json::from_slice(&m.content).unwrap();
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

pub fn key(kind: &str, name: &str) -> ObjectKey {
    ObjectKey {
        kind: kind.into(),
        namespace: "default".into(),
        name: name.into(),
    }
}

/// Copies the example manifests into a fresh directory.
pub fn example_manifests(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests");
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
}

/// The manifest, data and ring directories of a test under `root`.
pub fn dirs(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (root.join("m"), root.join("data"), root.join("rings"))
}

/// An upstream message from `node`, as a shard passes it on.
pub fn upstream(node: &str, seq: u64, source: &str, resource: &str, content: &str) -> UpRecord {
    UpRecord::Upstream {
        node_id: node.into(),
        store_id: 0,
        message: schema::Message {
            header: schema::Header {
                seq,
                ..schema::Header::default()
            },
            route: schema::Route {
                source: source.into(),
                group: if source == "twin" { "twin" } else { "resource" }.into(),
                operation: "update".into(),
                resource: resource.into(),
                ..schema::Route::default()
            },
            content: content.as_bytes().to_vec(),
        },
    }
}

/// Whether `records` hold a `Committed` for `node` at exactly `seq`.
pub fn committed(records: &[(u16, DownRecord)], node: &str, seq: u64) -> bool {
    records
        .iter()
        .any(|(_, r)| matches!(r, DownRecord::Committed { node_id, seq: s, .. } if node_id == node && *s == seq))
}
