//! Creating and attaching to ring files: both roles over one real file,
//! racing creators, and files that are not ring files of this size.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Barrier;

use shm::{OpenError, RingError, RingFile, Role, ring_path};

const RING: usize = 4096;

fn open(path: &Path, role: Role) -> RingFile {
    RingFile::open(path, RING, role).unwrap_or_else(|e| panic!("{e}"))
}

/// Bytes from a small xorshift generator: garbage that is the same every run.
fn garbage(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn opposite_roles_exchange_records_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(dir.path(), 3);
    assert_eq!(path.file_name().unwrap(), "shard-3.ring");
    let control = open(&path, Role::Control);
    let shard = open(&path, Role::Shard);
    assert_eq!(shard.path(), path);
    assert_eq!(shard.role(), Role::Shard);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        2 * (hub_core::ring::HEADER_BYTES + RING) as u64
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let mut out = Vec::new();
    control.push_and_wake(b"down 1").unwrap();
    control.push_and_wake(b"down 2").unwrap();
    shard.push_and_wake(b"up 1").unwrap();
    assert!(shard.inbound().used() > 0 && shard.outbound().used() > 0);
    let occupancy = control.occupancy();
    assert_eq!(occupancy.inbound_used, shard.outbound().used());
    assert_eq!(occupancy.outbound_used, shard.inbound().used());
    assert_eq!(occupancy.inbound_capacity, RING as u64);

    assert!(shard.pop_and_wake(&mut out).unwrap());
    assert_eq!(out, b"down 1");
    let cursor = shard.inbound().read(None, &mut out).unwrap().unwrap();
    assert_eq!(out, b"down 2");
    shard.release_and_wake(cursor).unwrap();
    assert!(!shard.pop_and_wake(&mut out).unwrap());

    assert!(control.pop_and_wake(&mut out).unwrap());
    assert_eq!(out, b"up 1");
    assert!(!control.pop_and_wake(&mut out).unwrap());
    assert_eq!(control.occupancy().inbound_used, 0);
    assert_eq!(control.occupancy().outbound_used, 0);
}

#[test]
fn a_later_opener_finds_what_was_pushed_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(dir.path(), 0);
    {
        let control = open(&path, Role::Control);
        control.push_and_wake(b"waiting for the shard").unwrap();
    }
    let shard = open(&path, Role::Shard);
    let mut out = Vec::new();
    assert!(shard.pop_and_wake(&mut out).unwrap());
    assert_eq!(out, b"waiting for the shard");
}

#[test]
fn creators_racing_on_a_new_file_agree() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let path = ring_path(dir.path(), round);
        let start = Barrier::new(2);
        let opened = Barrier::new(2);
        std::thread::scope(|s| {
            for role in [Role::Control, Role::Shard] {
                let (path, start, opened) = (&path, &start, &opened);
                s.spawn(move || {
                    start.wait();
                    let file = open(path, role);
                    file.push_and_wake(format!("{role:?}").as_bytes()).unwrap();
                    opened.wait();
                    let mut out = Vec::new();
                    assert!(file.pop_and_wake(&mut out).unwrap(), "round {round}");
                    let other = if role == Role::Control {
                        "Shard"
                    } else {
                        "Control"
                    };
                    assert_eq!(out, other.as_bytes(), "round {round}");
                });
            }
        });
    }
}

#[test]
fn a_file_made_for_another_ring_size_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(dir.path(), 1);
    drop(open(&path, Role::Control));
    let len = std::fs::metadata(&path).unwrap().len();
    let err = RingFile::open(&path, 2 * RING, Role::Shard).unwrap_err();
    assert!(
        matches!(err, OpenError::WrongSize { len: l, ring_bytes, .. } if l == len && ring_bytes == 2 * RING),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("delete it"), "{message}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        len,
        "left untouched"
    );
}

#[test]
fn garbage_files_are_refused_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let expected = 2 * (hub_core::ring::HEADER_BYTES + RING);
    for seed in 1..20u64 {
        let path = dir.path().join(format!("garbage-{seed}"));
        // Every other file has the right length, so the rings are checked.
        let len = if seed % 2 == 0 {
            expected
        } else {
            (seed as usize * 977) % (3 * expected) + 1
        };
        std::fs::write(&path, garbage(len, seed)).unwrap();
        let err = RingFile::open(&path, RING, Role::Shard).unwrap_err();
        if len == expected {
            assert!(
                matches!(err, OpenError::NotARing { half: "down", .. }),
                "{err:?}"
            );
        } else {
            assert!(matches!(err, OpenError::WrongSize { .. }), "{err:?}");
        }
        assert!(err.to_string().contains("garbage-"), "{err}");
    }
}

#[test]
fn a_damaged_second_ring_or_counter_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let half = hub_core::ring::HEADER_BYTES + RING;

    // A valid "down" ring followed by garbage.
    let path = ring_path(dir.path(), 0);
    drop(open(&path, Role::Control));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[half..].copy_from_slice(&garbage(half, 7));
    std::fs::write(&path, &bytes).unwrap();
    let err = RingFile::open(&path, RING, Role::Control).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::NotARing {
                half: "up",
                source: RingError::Mismatch { .. },
                ..
            }
        ),
        "{err:?}"
    );

    // Right magic, a tail far beyond the head (offset 64 of the header).
    let path = ring_path(dir.path(), 1);
    drop(open(&path, Role::Control));
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(64)).unwrap();
    file.write_all(&(1u64 << 40).to_le_bytes()).unwrap();
    drop(file);
    let err = RingFile::open(&path, RING, Role::Shard).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::NotARing {
                half: "down",
                source: RingError::Corrupt { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn unusable_ring_sizes_and_paths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(dir.path(), 0);
    for ring_bytes in [0, 32, 100, 4095, 1 << 31] {
        let err = RingFile::open(&path, ring_bytes, Role::Shard).unwrap_err();
        assert!(
            matches!(err, OpenError::BadRingSize { ring_bytes: r } if r == ring_bytes),
            "{err:?}"
        );
    }
    assert!(!path.exists(), "nothing created for a refused size");
    let err = RingFile::open(dir.path(), RING, Role::Shard).unwrap_err();
    assert!(
        matches!(err, OpenError::Io { action: "open", .. }),
        "{err:?}"
    );
}
