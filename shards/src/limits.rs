//! Host limits checked at startup: open files and locked memory. The plan is
//! computed by a pure function so every branch is tested; [`Limits::read`]
//! is the only part that asks the kernel.

use rustix::process::{Resource, getrlimit, setrlimit};

/// Smallest io_uring buffer area an executor can start with.
pub const MIN_IO_MEMORY: usize = 512 << 10;

/// What the host allows this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Soft and hard `RLIMIT_NOFILE` (`None` = unlimited).
    pub nofile: (Option<u64>, Option<u64>),
    /// Soft `RLIMIT_MEMLOCK` in bytes (`None` = unlimited).
    pub memlock: Option<u64>,
    /// The process holds CAP_IPC_LOCK, so memlock is not enforced.
    pub ipc_lock: bool,
}

/// What the shards will use, and what the operator should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// io_uring buffer bytes per executor.
    pub io_memory: usize,
    /// Raise the soft open-files limit to this first (up to the hard one).
    pub raise_nofile_to: Option<u64>,
    /// Things to log as warnings, each saying what to raise and to what.
    pub warnings: Vec<String>,
}

/// Why the shards cannot start on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error(
        "locked memory limit is {have} bytes for {shards} shards; each needs at least {need} bytes of io_uring buffers: raise memlock to {total} bytes (`ulimit -l {kib}`, `LimitMEMLOCK={total}` in the systemd unit) or grant CAP_IPC_LOCK"
    )]
    Memlock {
        have: u64,
        shards: usize,
        need: usize,
        total: usize,
        kib: usize,
    },
}

impl Limits {
    /// Asks the kernel.
    pub fn read() -> Self {
        let nofile = getrlimit(Resource::Nofile);
        let memlock = getrlimit(Resource::Memlock);
        Self {
            nofile: (nofile.current, nofile.maximum),
            memlock: memlock.current,
            ipc_lock: has_ipc_lock(),
        }
    }

    /// Raises the soft open-files limit to `to` (capped at the hard limit).
    pub fn raise_nofile(&self, to: u64) -> std::io::Result<()> {
        let current = self.nofile.1.map_or(to, |hard| to.min(hard));
        setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(current),
                maximum: self.nofile.1,
            },
        )
        .map_err(std::io::Error::from)
    }
}

fn has_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Decides the buffer size per executor and whether to raise the open-files
/// limit, for `shards` executors asking `io_memory` each and holding up to
/// `node_limit` connections.
pub fn plan(
    limits: &Limits,
    shards: usize,
    io_memory: usize,
    node_limit: usize,
) -> Result<Plan, LimitsError> {
    let mut warnings = Vec::new();
    // Sockets, plus listeners, ring files, the metrics endpoint, io_uring
    // and eventfds per shard, plus the process's own.
    let want_files = node_limit as u64 + 16 * shards as u64 + 64;
    let mut raise_nofile_to = None;
    match limits.nofile {
        (Some(soft), hard) if soft < want_files => {
            let reachable = hard.map_or(want_files, |h| want_files.min(h));
            if reachable > soft {
                raise_nofile_to = Some(reachable);
            }
            if reachable < want_files {
                warnings.push(format!(
                    "open files are limited to {reachable} but nodeLimit {node_limit} with {shards} shards needs {want_files}: raise nofile to {want_files} (`ulimit -n {want_files}`, `LimitNOFILE={want_files}`) or lower nodeLimit to {}; connections past the limit will be refused",
                    reachable.saturating_sub(16 * shards as u64 + 64)
                ));
            }
        }
        _ => {}
    }
    let io_memory = match limits.memlock {
        _ if limits.ipc_lock => io_memory,
        None => io_memory,
        Some(have) => {
            let per_shard = usize::try_from(have).unwrap_or(usize::MAX) / shards.max(1);
            if per_shard >= io_memory {
                io_memory
            } else if per_shard >= MIN_IO_MEMORY {
                // Round down to 64 KiB.
                let smaller = per_shard & !((64 << 10) - 1);
                warnings.push(format!(
                    "locked memory limit of {have} bytes cannot hold {io_memory} bytes of io_uring buffers for each of {shards} shards; using {smaller}. Raise memlock to {} (`ulimit -l {}`) or grant CAP_IPC_LOCK for the configured size",
                    io_memory * shards,
                    (io_memory * shards).div_ceil(1024)
                ));
                smaller
            } else {
                let total = MIN_IO_MEMORY * shards;
                return Err(LimitsError::Memlock {
                    have,
                    shards,
                    need: MIN_IO_MEMORY,
                    total,
                    kib: total / 1024,
                });
            }
        }
    };
    Ok(Plan {
        io_memory,
        raise_nofile_to,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(nofile: u64, memlock: u64, ipc_lock: bool) -> Limits {
        Limits {
            nofile: (Some(nofile), Some(nofile * 2)),
            memlock: Some(memlock),
            ipc_lock,
        }
    }

    #[test]
    fn enough_of_everything_changes_nothing() {
        let plan = plan(&limits(100_000, 64 << 20, false), 2, 1 << 20, 1000).unwrap();
        assert_eq!(plan.io_memory, 1 << 20);
        assert_eq!(plan.raise_nofile_to, None);
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn low_memlock_shrinks_the_buffers_and_says_what_to_raise() {
        let plan = plan(&limits(100_000, 8 << 20, false), 4, 10 << 20, 1000).unwrap();
        assert_eq!(plan.io_memory, 2 << 20);
        assert!(
            plan.warnings[0].contains("ulimit -l 40960"),
            "{:?}",
            plan.warnings
        );
        // With the capability the limit does not apply.
        let plan = super::plan(&limits(100_000, 8 << 20, true), 4, 10 << 20, 1000).unwrap();
        assert_eq!(plan.io_memory, 10 << 20);
    }

    #[test]
    fn memlock_below_the_minimum_is_a_clear_error() {
        let err = plan(&limits(100_000, 1 << 20, false), 4, 1 << 20, 10).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("ulimit -l 2048") && text.contains("CAP_IPC_LOCK"),
            "{text}"
        );
    }

    #[test]
    fn open_files_are_raised_to_the_hard_limit_and_the_rest_explained() {
        let plan = plan(&limits(1024, 64 << 20, false), 2, 1 << 20, 1500).unwrap();
        assert_eq!(plan.raise_nofile_to, Some(1500 + 32 + 64));
        assert!(plan.warnings.is_empty());
        let plan = super::plan(&limits(1024, 64 << 20, false), 2, 1 << 20, 5000).unwrap();
        assert_eq!(plan.raise_nofile_to, Some(2048));
        assert!(
            plan.warnings[0].contains("ulimit -n 5096"),
            "{:?}",
            plan.warnings
        );
    }
}
