//! The private containerd that the Pod tests run on, checked as its user
//! would: instances side by side, the locally built images imported and
//! listed, busybox run under runc (to its end, or detached), and nothing
//! of an instance left running or mounted once it is dropped, even after
//! containerd itself was killed.
//!
//! Every wait polls `ctr` or `/proc` until it shows the expected state or a
//! deadline passes.

mod support;

use std::path::{Path, PathBuf};

use support::containerd::{self, BUSYBOX, Containerd, PAUSE};
use support::eventually;

#[test]
fn two_instances_start_side_by_side() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Containerd::start(a_dir.path());
    let b = Containerd::start(b_dir.path());
    assert_ne!(a.socket(), b.socket());
    assert!(a.endpoint().starts_with("unix:///"), "{}", a.endpoint());
    for instance in [&a, &b] {
        let version = instance.ctr(&["version"]);
        assert!(version.contains("Server:"), "{version}");
    }
    if let (Some(x), Some(y)) = (a.bridge(), b.bridge()) {
        assert_ne!(x, y);
        assert_ne!(a.subnet(), b.subnet());
    }
}

#[test]
fn images_import_and_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let containerd = Containerd::start_with_images(dir.path());
    let listed = containerd.ctr(&["images", "ls", "-q"]);
    let names: Vec<&str> = listed.lines().collect();
    assert!(names.contains(&BUSYBOX), "{listed}");
    assert!(names.contains(&PAUSE), "{listed}");
}

#[test]
fn the_images_are_the_same_bytes_when_built_again() {
    let dir = tempfile::tempdir().unwrap();
    let first = containerd::build_images(&dir.path().join("first"));
    let second = containerd::build_images(&dir.path().join("second"));
    for (x, y) in [(first.busybox, second.busybox), (first.pause, second.pause)] {
        let same = std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap();
        assert!(same, "{} and {} differ", x.display(), y.display());
    }
}

#[test]
fn busybox_runs_under_runc() {
    let dir = tempfile::tempdir().unwrap();
    let containerd = Containerd::start_with_images(dir.path());
    let script = "echo hello-from-busybox; id -un";
    let out = containerd.run(BUSYBOX, "hello", &["sh", "-c", script]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["hello-from-busybox", "root"]
    );

    let script = "echo from-the-background; exec sleep 2147483647";
    containerd.run_detached(BUSYBOX, "background", &["sh", "-c", script]);
    eventually("the detached task's output", || {
        containerd.output("background") == "from-the-background\n"
    });
}

#[test]
fn a_dropped_instance_leaves_no_shim_container_or_mount() {
    let dir = tempfile::tempdir().unwrap();
    let containerd = Containerd::start_with_images(dir.path());
    containerd.run_detached(PAUSE, "sleeper", &[]);
    let sleeper = task_pid(&containerd, "sleeper");
    let cgroup = memory_cgroup(sleeper);
    let (root, daemon) = (containerd.dir().to_owned(), containerd.pid());
    assert!(!containerd.shims().is_empty(), "no shim for the sleeper");
    assert!(
        !containerd::mounts_under(&root).is_empty(),
        "the sleeper's root file system is not mounted"
    );

    drop(containerd);
    for pid in [sleeper, daemon] {
        assert!(!containerd::alive(pid), "process {pid} still runs");
    }
    eventually("the shims are gone", || {
        containerd::shims_of(&root).is_empty()
    });
    let left = containerd::mounts_under(&root);
    assert!(left.is_empty(), "still mounted: {left:?}");
    assert_cgroup_gone(cgroup);
}

#[test]
fn the_shims_of_a_crashed_daemon_are_cleaned_up_too() {
    let dir = tempfile::tempdir().unwrap();
    let containerd = Containerd::start_with_images(dir.path());
    containerd.run_detached(PAUSE, "orphan", &[]);
    let sleeper = task_pid(&containerd, "orphan");
    let shims = containerd.shims();
    assert_eq!(shims.len(), 1, "shims: {shims:?}");
    // containerd 1.6 puts the shim's socket in /run/containerd/s.
    let sockets = containerd::unix_sockets(shims[0]);
    assert!(!sockets.is_empty(), "the shim listens on no socket");
    let cgroup = memory_cgroup(sleeper);
    assert!(cgroup.as_ref().is_none_or(|c| c.exists()), "{cgroup:?}");
    let root = containerd.dir().to_owned();

    let daemon = rustix::process::Pid::from_raw(containerd.pid() as i32).unwrap();
    rustix::process::kill_process(daemon, rustix::process::Signal::KILL).unwrap();
    eventually("containerd dies", || !containerd::alive(containerd.pid()));
    assert!(containerd::alive(shims[0]), "the shim died with containerd");
    drop(containerd);

    for pid in [sleeper, shims[0]] {
        assert!(!containerd::alive(pid), "process {pid} still runs");
    }
    let left = containerd::mounts_under(&root);
    assert!(left.is_empty(), "still mounted: {left:?}");
    for socket in sockets.iter().filter(|s| !s.starts_with(&root)) {
        assert!(!socket.exists(), "{} is left", socket.display());
    }
    assert_cgroup_gone(cgroup);
}

/// Neither the container's cgroup nor the instance's above it is left.
fn assert_cgroup_gone(cgroup: Option<PathBuf>) {
    for dir in cgroup
        .iter()
        .flat_map(|c| [c.as_path(), c.parent().unwrap()])
    {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}

/// The host's process id of a running task, from `ctr tasks ls`.
fn task_pid(containerd: &Containerd, id: &str) -> u32 {
    let tasks = containerd.ctr(&["tasks", "ls"]);
    tasks
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(id)).then(|| words.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no task {id}:\n{tasks}"))
}

/// Where a process's memory cgroup lives, on a cgroup v1 host (as here).
fn memory_cgroup(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let (_, path) = text.lines().find_map(|line| line.split_once(":memory:/"))?;
    Some(Path::new("/sys/fs/cgroup/memory").join(path))
}
