//! Creating and attaching to ring files: both roles over one real file,
//! racing creators, the ring size recorded by the creator and adopted by the
//! other process, and files that are not ring files.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Barrier;

use shm::{OpenError, RingError, RingFile, RingSize, Role, ring_path};

const RING: usize = 4096;

fn open(path: &Path, role: Role) -> RingFile {
    RingFile::open(path, RingSize::Configured(RING), role).unwrap_or_else(|e| panic!("{e}"))
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

/// Opens `path` as `role` with `size`, panicking with the error.
fn open_sized(path: &Path, size: RingSize, role: Role) -> RingFile {
    RingFile::open(path, size, role).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_default_size_adopts_the_size_the_creator_recorded() {
    let dir = tempfile::tempdir().unwrap();
    for (creator, adopter) in [(Role::Control, Role::Shard), (Role::Shard, Role::Control)] {
        let path = ring_path(dir.path(), creator as usize);
        let first = open_sized(&path, RingSize::Default(RING), creator);
        assert!(!first.adopted());
        let second = open_sized(&path, RingSize::Default(16 * RING), adopter);
        assert!(second.adopted());
        assert_eq!((first.ring_bytes(), second.ring_bytes()), (RING, RING));
        assert_eq!(second.occupancy().inbound_capacity, RING as u64);
        // The same rings: records cross both ways.
        first.push_and_wake(b"from the creator").unwrap();
        second.push_and_wake(b"from the adopter").unwrap();
        let mut out = Vec::new();
        assert!(second.pop_and_wake(&mut out).unwrap());
        assert_eq!(out, b"from the creator");
        assert!(first.pop_and_wake(&mut out).unwrap());
        assert_eq!(out, b"from the adopter");
        // A configured size equal to the recorded one is fine too.
        drop(second);
        assert!(open_sized(&path, RingSize::Configured(RING), adopter).adopted());
    }
}

#[test]
fn a_configured_size_that_differs_from_the_file_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(dir.path(), 1);
    drop(open_sized(&path, RingSize::Default(RING), Role::Control));
    let len = std::fs::metadata(&path).unwrap().len();
    let err = RingFile::open(&path, RingSize::Configured(2 * RING), Role::Shard).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::SizeConflict { file_bytes, configured_bytes, process: "cloudhub", .. }
                if file_bytes == RING && configured_bytes == 2 * RING
        ),
        "{err:?}"
    );
    let message = err.to_string();
    for part in [
        path.display().to_string(),
        RING.to_string(),
        (2 * RING).to_string(),
        "cloudhub's `rings.ringBytes`".into(),
        "cloudcontrol's `ringBytes`".into(),
        "--ring-bytes".into(),
    ] {
        assert!(message.contains(&part), "{part:?} missing from: {message}");
    }
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        len,
        "left untouched"
    );
    let err = RingFile::open(&path, RingSize::Configured(RING / 2), Role::Control).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::SizeConflict {
                process: "cloudcontrol",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn creators_of_different_default_sizes_racing_agree_on_one() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let path = ring_path(dir.path(), round);
        let start = Barrier::new(2);
        let sizes: Vec<usize> = std::thread::scope(|s| {
            let opened = [(Role::Control, RING), (Role::Shard, 4 * RING)].map(|(role, size)| {
                let (path, start) = (&path, &start);
                s.spawn(move || {
                    start.wait();
                    open_sized(path, RingSize::Default(size), role).ring_bytes()
                })
            });
            opened.map(|h| h.join().unwrap()).to_vec()
        });
        assert_eq!(sizes[0], sizes[1], "round {round}");
        let expected = 2 * (hub_core::ring::HEADER_BYTES + sizes[0]) as u64;
        assert_eq!(std::fs::metadata(&path).unwrap().len(), expected);
    }
}

#[test]
fn a_file_sized_by_a_creator_that_died_before_its_rings_is_adopted_by_length() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(dir.path(), 0);
    let half = hub_core::ring::HEADER_BYTES + 2 * RING;
    std::fs::write(&path, vec![0u8; 2 * half]).unwrap();
    let shard = open_sized(&path, RingSize::Default(RING), Role::Shard);
    assert_eq!((shard.ring_bytes(), shard.adopted()), (2 * RING, true));
    let control = open_sized(&path, RingSize::Configured(2 * RING), Role::Control);
    control.push_and_wake(b"after all").unwrap();
    let mut out = Vec::new();
    assert!(shard.pop_and_wake(&mut out).unwrap());
    assert_eq!(out, b"after all");
}

#[test]
fn a_ring_file_of_the_wrong_length_for_its_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = ring_path(dir.path(), 1);
    drop(open(&path, Role::Control));
    let len = std::fs::metadata(&path).unwrap().len() + 4096;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len)
        .unwrap();
    let err = RingFile::open(&path, RingSize::Default(RING), Role::Shard).unwrap_err();
    assert!(
        matches!(err, OpenError::WrongSize { len: l, ring_bytes, .. } if l == len && ring_bytes == RING),
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
        let err = RingFile::open(&path, RingSize::Default(RING), Role::Shard).unwrap_err();
        if len >= hub_core::ring::GEOMETRY_BYTES {
            // The header holds no ring's geometry.
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
    let err = RingFile::open(&path, RingSize::Configured(RING), Role::Control).unwrap_err();
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
    let err = RingFile::open(&path, RingSize::Configured(RING), Role::Shard).unwrap_err();
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
        let err = RingFile::open(&path, RingSize::Default(ring_bytes), Role::Shard).unwrap_err();
        assert!(
            matches!(err, OpenError::BadRingSize { ring_bytes: r } if r == ring_bytes),
            "{err:?}"
        );
    }
    assert!(!path.exists(), "nothing created for a refused size");
    let err = RingFile::open(dir.path(), RingSize::Default(RING), Role::Shard).unwrap_err();
    assert!(
        matches!(err, OpenError::Io { action: "open", .. }),
        "{err:?}"
    );
}
