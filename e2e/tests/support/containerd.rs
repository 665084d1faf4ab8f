//! A private containerd for the tests that run Pods through its CRI: its
//! own root, state, socket and CNI bridge under a test's directory, and the
//! images built on this machine by `examples/oci-image.sh`, since no
//! registry can be reached. Dropping it stops every process it started,
//! unmounts what they mounted and deletes its bridge.
//!
//! Every wait polls what `ctr` answers or what `/proc` shows until a
//! deadline passes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use super::PATIENCE;

/// The image whose default command is `sh`.
pub(crate) const BUSYBOX: &str = "apiary.local/busybox:1";
/// The CRI's sandbox image: it sleeps for 68 years.
pub(crate) const PAUSE: &str = "apiary.local/pause:1";
/// The namespace the CRI keeps its images and containers in.
pub(crate) const NAMESPACE: &str = "k8s.io";
const CNI_BIN: &str = "/usr/lib/cni";
const LOG_TAIL: usize = 60;
/// How long a stop may take before it is forced.
const GRACE: Duration = Duration::from_secs(10);

/// Numbers the instances of this process, for names no other instance has:
/// bridges, cgroups.
static INSTANCES: AtomicU32 = AtomicU32::new(0);

/// A containerd running on its own configuration under `dir`.
#[derive(Debug)]
pub(crate) struct Containerd {
    /// Unique among the instances of all processes: `PIDxN`.
    tag: String,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    child: Child,
    network: Option<Network>,
}

/// The two standard images as archives `ctr images import` takes.
#[derive(Debug)]
pub(crate) struct Images {
    pub(crate) busybox: PathBuf,
    pub(crate) pause: PathBuf,
}

impl Containerd {
    /// Starts containerd with its root, state, socket, CNI configuration
    /// and log (`containerd.log`) in `dir`, once it answers with its CRI
    /// plugin loaded.
    pub(crate) fn start(dir: &Path) -> Self {
        require();
        let dir = dir
            .canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let socket = dir.join("c.sock");
        // The kernel's limit for a unix socket's path is 108 bytes.
        assert!(
            socket.as_os_str().len() < 100,
            "{} is too long for a unix socket: use a shorter directory",
            socket.display()
        );
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id());
        let network = cni_available().then(|| Network::create(&dir, &tag, n));
        let config = dir.join("containerd.toml");
        std::fs::write(&config, config_text(&dir, &socket, network.as_ref())).unwrap();
        let log = dir.join("containerd.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting containerd: {e}"));
        let mut containerd = Self {
            tag,
            dir,
            socket,
            log,
            child,
            network,
        };
        containerd.wait_ready();
        containerd
    }

    /// [`Containerd::start`], then both standard images built into
    /// `dir/images` and imported.
    pub(crate) fn start_with_images(dir: &Path) -> Self {
        let containerd = Self::start(dir);
        let images = build_images(&containerd.dir.join("images"));
        containerd.import(&images.busybox);
        containerd.import(&images.pause);
        containerd
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// The CRI endpoint, as kubelet's `--container-runtime-endpoint` takes it.
    pub(crate) fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CNI bridge that non-host-network sandboxes are attached to, if
    /// the CNI plugins are installed; the bridge holds the subnet's `.1`.
    pub(crate) fn bridge(&self) -> Option<&str> {
        self.network.as_ref().map(|n| n.bridge.as_str())
    }

    /// The sandboxes' subnet, e.g. `10.1.2.0/24`, if CNI is configured.
    pub(crate) fn subnet(&self) -> Option<String> {
        self.network.as_ref().map(Network::subnet)
    }

    /// Imports an image archive (`ctr images import`) into the CRI's
    /// namespace, unpacked for the `native` snapshotter the CRI uses.
    pub(crate) fn import(&self, archive: &Path) {
        let archive = archive.to_str().expect("a UTF-8 path");
        self.ctr(&["images", "import", "--snapshotter", "native", archive]);
    }

    /// Runs `ctr ARGS` against this instance in the CRI's namespace; its
    /// stdout. Panics with its output and containerd's log if it fails.
    pub(crate) fn ctr(&self, args: &[&str]) -> String {
        let out = self.ctr_output(args);
        assert!(
            out.status.success(),
            "ctr {} failed ({}):\n{}{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr ARGS` as [`Containerd::ctr`] runs it, failure included.
    pub(crate) fn ctr_output(&self, args: &[&str]) -> Output {
        self.command(NAMESPACE)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running ctr: {e}"))
    }

    /// `ctr run --rm IMAGE ID COMMAND...` to its end; its output, stdout
    /// and stderr (each in order, not with each other). Panics with it if
    /// the command fails.
    pub(crate) fn run(&self, image: &str, id: &str, command: &[&str]) -> String {
        let out = self.ctr_run("--rm", image, id, command);
        let output = self.output(id);
        assert!(
            out.status.success(),
            "ctr run {id} failed ({}): {}\nits output:\n{output}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        output
    }

    /// `ctr run -d IMAGE ID COMMAND...`: the task is left running, its
    /// output going to [`Containerd::output`].
    pub(crate) fn run_detached(&self, image: &str, id: &str, command: &[&str]) {
        let out = self.ctr_run("-d", image, id, command);
        assert!(
            out.status.success(),
            "ctr run -d {id} failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    /// What the task `id` of [`Containerd::run`] or
    /// [`Containerd::run_detached`] has written so far.
    pub(crate) fn output(&self, id: &str) -> String {
        std::fs::read_to_string(self.output_file(id)).unwrap_or_default()
    }

    fn output_file(&self, id: &str) -> PathBuf {
        self.dir.join("output").join(format!("{id}.log"))
    }

    /// `ctr run` with the runc state and the FIFOs under `dir`, where
    /// ctr would otherwise put them in /run, and the cgroup under this
    /// instance's own (ctr's `/k8s.io/ID` is shared by every instance).
    /// The shim writes the output to a file: ctr's own copy of it loses
    /// a short task's output now and then on a loaded machine.
    fn ctr_run(&self, mode: &str, image: &str, id: &str, command: &[&str]) -> Output {
        let state = self.dir.join("state");
        let runc = state.join("runc").display().to_string();
        let fifo = state.join("fifo").display().to_string();
        let cgroup = format!("{}/{id}", self.cgroup());
        let file = self.output_file(id);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&file);
        let log = format!("file://{}", file.display());
        let mut args = vec!["run", "--snapshotter", "native", "--runc-root", &runc];
        args.extend(["--fifo-dir", &fifo, "--cgroup", &cgroup, "--log-uri", &log]);
        args.extend([mode, image, id]);
        args.extend(command);
        self.ctr_output(&args)
    }

    /// The cgroup (in each hierarchy) that `ctr run`'s containers go in.
    pub(crate) fn cgroup(&self) -> String {
        format!("/apiary-{}", self.tag)
    }

    /// The shims of this instance that still run, by process id.
    pub(crate) fn shims(&self) -> Vec<u32> {
        shims_of(&self.dir)
    }

    /// The last lines of containerd's log, to print when a test fails.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
        format!(
            "--- containerd (last {} lines of {}) ---\n{}",
            tail.len(),
            self.log.display(),
            tail.join("\n")
        )
    }

    fn command(&self, namespace: &str) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(&self.socket)
            .args(["--connect-timeout", "5s", "--namespace", namespace])
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE")
            .env_remove("CONTAINERD_SNAPSHOTTER")
            .stdin(Stdio::null());
        command
    }

    /// Polls `ctr plugins ls` until the CRI plugin shows `ok`.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("containerd exited ({status}):\n{}", self.log_tail());
            }
            let out = self.command(NAMESPACE).args(["plugins", "ls"]).output();
            let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            let cri = text.unwrap_or_default().lines().find_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                (words.get(1) == Some(&"cri")).then(|| words.last().unwrap().to_string())
            });
            match cri.as_deref() {
                Some("ok") => return,
                Some(status) => panic!("containerd's CRI plugin: {status}\n{}", self.log_tail()),
                None => {}
            }
            assert!(
                Instant::now() < deadline,
                "containerd never answered on {}:\n{}",
                self.socket.display(),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        let sandboxes = self.delete_tasks();
        self.stop_daemon();
        kill_shims(&self.dir);
        unmount_under(&self.dir);
        remove_cgroups(&HashSet::from([self.cgroup()]));
        if let Some(network) = &self.network {
            network.remove(&sandboxes);
        }
    }
}

impl Containerd {
    /// Kills and deletes every task in every namespace while containerd
    /// still answers, so that the shims exit and clean up themselves.
    /// Returns the ids of the CRI's containers (sandboxes among them).
    fn delete_tasks(&mut self) -> Vec<String> {
        if self.child.try_wait().ok().flatten().is_some() {
            return Vec::new();
        }
        let quiet = |namespace: &str, args: &[&str]| -> Vec<String> {
            let out = self
                .command(namespace)
                .arg("--timeout=20s")
                .args(args)
                .output();
            let out = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            out.unwrap_or_default().lines().map(str::to_owned).collect()
        };
        for namespace in quiet(NAMESPACE, &["namespaces", "ls", "-q"]) {
            for task in quiet(&namespace, &["tasks", "ls", "-q"]) {
                quiet(&namespace, &["tasks", "delete", "--force", &task]);
            }
        }
        quiet(NAMESPACE, &["containers", "ls", "-q"])
    }

    /// SIGTERM, then SIGKILL after [`GRACE`].
    fn stop_daemon(&mut self) {
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Panics unless this process can run containers.
fn require() {
    let how = "run the README's test command, `bash .ci/test`, which installs them";
    for tool in ["containerd", "ctr", "runc"] {
        assert!(
            on_path(tool),
            "{tool} is missing: the containerd tests need containerd, ctr and runc; {how}"
        );
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "the containerd tests run containers and so must run as root: \
         run the README's test command, `bash .ci/test`, as root"
    );
    assert!(
        !cni_available() || on_path("ip"),
        "ip (iproute2) is missing: the containerd tests make their CNI bridge with it; {how}"
    );
}

fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|dir| dir.join(tool).is_file())
}

fn cni_available() -> bool {
    ["bridge", "host-local", "loopback"]
        .iter()
        .all(|plugin| Path::new(CNI_BIN).join(plugin).is_file())
}

/// containerd's configuration: everything it writes stays under `dir`.
fn config_text(dir: &Path, socket: &Path, network: Option<&Network>) -> String {
    let d = dir.display();
    let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
    let cni = match network {
        Some(n) => format!(
            "[{cri}.cni]\n  bin_dir = \"{CNI_BIN}\"\n  conf_dir = \"{}\"\n",
            n.conf_dir.display()
        ),
        // The CRI then reports its network not ready: only host-network
        // sandboxes start.
        None => format!("[{cri}.cni]\n  conf_dir = \"{d}/cni\"\n"),
    };
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
# Snapshotters that cannot work here, and the plugin that writes to /opt.
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{d}/t.sock"

[{cri}]
  sandbox_image = "{PAUSE}"
  netns_mounts_under_state_dir = true
  # Sandboxes ask for -998, which needs CAP_SYS_RESOURCE that a test's
  # root may lack; they get containerd's own instead.
  restrict_oom_score_adj = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  # Overlay may be unavailable (the tests may run on overlay themselves).
  snapshotter = "native"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  Root = "{d}/state/runc"

{cni}"#,
        socket = socket.display(),
    )
}

/// Builds the standard images into `dir` with `examples/oci-image.sh`.
pub(crate) fn build_images(dir: &Path) -> Images {
    std::fs::create_dir_all(dir).unwrap();
    let images = Images {
        busybox: dir.join("busybox.tar"),
        pause: dir.join("pause.tar"),
    };
    oci_image(BUSYBOX, &images.busybox, &[]);
    oci_image(PAUSE, &images.pause, &["sleep", "2147483647"]);
    images
}

fn oci_image(name: &str, out: &Path, command: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/oci-image.sh");
    let mut build = Command::new("bash");
    build.arg(&script).args(["--name", name, "--out"]).arg(out);
    if !command.is_empty() {
        build.arg("--").args(command);
    }
    let built = build.output().unwrap();
    assert!(
        built.status.success(),
        "{} --name {name} failed: {}\n{}",
        script.display(),
        built.status,
        String::from_utf8_lossy(&built.stderr)
    );
}

/// A bridge with the subnet's `.1`, made before containerd starts so
/// that the CNI bridge plugin need not be a gateway: as one it would turn
/// on the host's IP forwarding.
#[derive(Debug)]
struct Network {
    name: String,
    bridge: String,
    net: [u8; 3],
    conf_dir: PathBuf,
}

impl Network {
    /// The bridge `apyTAG`, on a /24 in 10/8 derived from the tag's parts.
    fn create(dir: &Path, tag: &str, n: u32) -> Self {
        let network = Self {
            name: format!("apiary-{tag}"),
            bridge: format!("apy{tag}"),
            net: free_net(std::process::id().wrapping_mul(16).wrapping_add(n)),
            conf_dir: dir.join("cni"),
        };
        assert!(network.bridge.len() <= 15, "{} is too long", network.bridge);
        // One of that name was left by an earlier process with this pid.
        if Path::new("/sys/class/net").join(&network.bridge).exists() {
            ip(&["link", "del", &network.bridge]);
        }
        let gateway = format!("{}/24", network.address(1));
        ip(&["link", "add", &network.bridge, "type", "bridge"]);
        ip(&["addr", "add", &gateway, "dev", &network.bridge]);
        ip(&["link", "set", &network.bridge, "up"]);
        std::fs::create_dir_all(&network.conf_dir).unwrap();
        let conflist = network.conflist(&dir.join("cni-ipam"));
        std::fs::write(network.conf_dir.join("10-apiary.conflist"), conflist).unwrap();
        network
    }

    fn address(&self, host: u8) -> String {
        let [a, b, c] = self.net;
        format!("{a}.{b}.{c}.{host}")
    }

    fn subnet(&self) -> String {
        format!("{}/24", self.address(0))
    }

    /// Bridge and host-local only: the CRI adds the loopback network
    /// itself, from the same plugin directory.
    fn conflist(&self, ipam_dir: &Path) -> String {
        format!(
            r#"{{
  "cniVersion": "1.0.0",
  "name": "{name}",
  "plugins": [{{
    "type": "bridge",
    "bridge": "{bridge}",
    "isGateway": false,
    "ipMasq": false,
    "ipam": {{
      "type": "host-local",
      "ranges": [[{{"subnet": "{subnet}", "gateway": "{gateway}"}}]],
      "routes": [{{"dst": "0.0.0.0/0", "gw": "{gateway}"}}],
      "dataDir": "{ipam}"
    }}
  }}]
}}
"#,
            name = self.name,
            bridge = self.bridge,
            subnet = self.subnet(),
            gateway = self.address(1),
            ipam = ipam_dir.display(),
        )
    }

    /// Deletes the bridge and the results that the CRI's CNI library
    /// cached in /var/lib/cni for this instance's sandboxes.
    fn remove(&self, sandboxes: &[String]) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let Ok(cached) = std::fs::read_dir("/var/lib/cni/results") else {
            return;
        };
        for entry in cached.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // The CRI's ids are 64 hex digits, unlike any other instance's.
            let ours = name.starts_with(&format!("{}-", self.name))
                || sandboxes
                    .iter()
                    .any(|id| id.len() == 64 && name.contains(id.as_str()));
            if ours {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The /24 in 10/8 numbered `key`, or the first after it (by a stride
/// that other keys are unlikely to meet) that the host routes nowhere.
fn free_net(key: u32) -> [u8; 3] {
    (0..256)
        .map(|k| key.wrapping_add(k * 4099))
        .map(|key| [10, (key >> 8) as u8, key as u8])
        .find(|&net| !routed(net))
        .expect("every /24 in 10/8 tried is routed by the host")
}

/// Whether a route of the host overlaps `net`/24 (the default route aside).
fn routed(net: [u8; 3]) -> bool {
    let ours = u32::from_be_bytes([net[0], net[1], net[2], 0]);
    let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let hex = |i: usize| {
            fields
                .get(i)
                .and_then(|f| u32::from_str_radix(f, 16).ok())
                .map(u32::from_be)
        };
        match (hex(1), hex(7)) {
            (Some(_), Some(0)) | (None, _) | (_, None) => false,
            (Some(dest), Some(mask)) => {
                let mask = mask & 0xffff_ff00;
                dest & mask == ours & mask
            }
        }
    })
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The running processes whose command line `keep` accepts.
fn processes(keep: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            !args.is_empty() && keep(&args)
        })
        .collect()
}

/// The shims whose command line names a path under `dir` (their
/// `-address` is the instance's socket).
pub(crate) fn shims_of(dir: &Path) -> Vec<u32> {
    let dir = dir.to_string_lossy().into_owned();
    processes(|args| {
        let name = Path::new(&args[0]).file_name().unwrap_or_default();
        name.to_string_lossy().starts_with("containerd-shim")
            && args.iter().any(|a| a.starts_with(&dir))
    })
}

/// Kills what survived the tasks' deletion (containerd died first, or
/// hung): each shim of this instance, the containers it started, the
/// sockets it listened on and the containers' cgroups.
fn kill_shims(dir: &Path) {
    let shims = shims_of(dir);
    if shims.is_empty() {
        return;
    }
    let sockets: Vec<PathBuf> = shims.iter().flat_map(|&pid| unix_sockets(pid)).collect();
    let containers: Vec<u32> = shims.iter().flat_map(|&pid| descendants(pid)).collect();
    let groups: HashSet<String> = containers.iter().flat_map(|&pid| cgroups(pid)).collect();
    let doomed: Vec<u32> = containers.iter().chain(&shims).copied().collect();
    for &pid in &doomed {
        if let Some(pid) = Pid::from_raw(pid as i32) {
            let _ = kill_process(pid, Signal::KILL);
        }
    }
    let deadline = Instant::now() + GRACE;
    while doomed.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for socket in sockets {
        let _ = std::fs::remove_file(socket);
    }
    remove_cgroups(&groups);
}

/// The cgroup paths of `pid`, one per hierarchy (`/k8s.io/ID`).
fn cgroups(pid: u32) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    text.lines()
        .filter_map(|line| Some(line.splitn(3, ':').nth(2)?.to_owned()))
        .filter(|path| path != "/")
        .collect()
}

/// Removes each of `paths` from every hierarchy under /sys/fs/cgroup; the
/// kernel refuses any that still holds a process or a child.
fn remove_cgroups(paths: &HashSet<String>) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    // cgroup v1 mounts a hierarchy per controller below it; v2 is it.
    let mut hierarchies: Vec<PathBuf> = hierarchies.flatten().map(|h| h.path()).collect();
    hierarchies.push("/sys/fs/cgroup".into());
    for path in paths {
        for hierarchy in &hierarchies {
            let _ = std::fs::remove_dir(hierarchy.join(path.trim_start_matches('/')));
        }
    }
}

/// Every process below `root`, by parent links in /proc.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = processes(|_| true)
        .into_iter()
        .filter_map(|pid| Some((pid, parent(pid)?)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

/// Fields of /proc/PID/stat after the command name, which may hold spaces.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Running: neither gone nor a zombie waiting for its parent.
pub(crate) fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|state| state != "Z"))
}

/// The paths of the unix sockets that `pid` holds open.
pub(crate) fn unix_sockets(pid: u32) -> Vec<PathBuf> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: HashSet<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (inode, path) = (fields.get(6)?, fields.get(7)?);
            (inodes.contains(*inode) && path.starts_with('/')).then(|| PathBuf::from(path))
        })
        .collect()
}

/// The mount points at or under `dir`, deepest first.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape(point)))
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything under `dir`, stacked mounts included.
fn unmount_under(dir: &Path) {
    for _ in 0..8 {
        let points = mounts_under(dir);
        if points.is_empty() {
            return;
        }
        for point in points {
            // A failure shows as the mount still listed on the next round.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&point)
                .stderr(Stdio::null())
                .status();
        }
    }
    eprintln!(
        "mounts left under {}: {:?}",
        dir.display(),
        mounts_under(dir)
    );
}
