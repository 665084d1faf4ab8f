//! `cloudhub`'s configuration: one TOML file with documented defaults, named
//! after KubeEdge's cloudhub options where the meaning is the same, and the
//! command-line flags that override it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hub_core::HubConfig;
use serde::Deserialize;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole file. Every field has a default, so an empty file is valid
/// (and serves plaintext only if TLS paths are left empty and a plaintext
/// port is set).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// Address the listeners bind. Default `0.0.0.0`.
    pub address: IpAddr,
    /// TLS port for edge links (KubeEdge's `port`). 0 picks a free port.
    /// Default 10000.
    pub port: u16,
    /// Plaintext port for benchmarks only: links on it are not
    /// authenticated and `Hello` is trusted. Default 0 = off; set
    /// `plaintextPort = 0` with `plaintext = true` for a free port.
    pub plaintext_port: u16,
    /// Open the plaintext listener. Default false.
    pub plaintext: bool,
    /// CA that signs edge certificates (`tlsCAFile`).
    #[serde(rename = "tlsCAFile")]
    pub tls_ca_file: Option<PathBuf>,
    /// Server certificate chain, PEM (`tlsCertFile`).
    pub tls_cert_file: Option<PathBuf>,
    /// Server private key, PEM (`tlsPrivateKeyFile`).
    pub tls_private_key_file: Option<PathBuf>,
    /// Most nodes connected at once (`nodeLimit`), split evenly over the
    /// shards. Default 1000.
    pub node_limit: usize,
    /// Seconds of silence before a keepalive (`keepaliveInterval`). Default 15.
    pub keepalive_interval: u64,
    /// Silent keepalive intervals before a link is closed. Default 3.
    pub missed_keepalives: u32,
    /// Seconds a write to an edge may take before the link is closed
    /// (`writeTimeout`). Default 30.
    pub write_timeout: u64,
    /// Seconds a connection has for its TLS handshake and `Hello`.
    /// Default 10.
    pub handshake_timeout: u64,
    /// Seconds an edge is told to wait before reconnecting after a graceful
    /// shutdown. Default 5.
    pub shutdown_retry_after: u64,
    /// Seconds a graceful shutdown waits for edges and rings to drain.
    /// Default 5.
    pub shutdown_grace: u64,
    pub shards: ShardsConfig,
    pub links: LinksConfig,
    pub rings: RingsConfig,
    pub metrics: MetricsConfig,
}

/// Executors.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ShardsConfig {
    /// Number of shards, one glommio executor each. 0 = one per online CPU.
    pub count: usize,
    /// CPU of each shard, in shard order; empty leaves them unpinned.
    pub cpus: Vec<usize>,
    /// Bytes of io_uring buffers each executor registers (needs locked
    /// memory; reduced automatically when `ulimit -l` is too low).
    /// Default 1 MiB.
    pub io_memory: usize,
    /// Listen backlog of each shard's listener. Default 4096.
    pub backlog: u32,
    /// Depth of the hand-off channel between two shards. Default 1024.
    pub handoff_depth: usize,
    /// Submission-queue entries of each executor's io_uring. Default 4096.
    /// The kernel sizes the table it searches on every cancel by the
    /// completion queue (twice this): at glommio's default of 128, a
    /// shard with thousands of idle connections walks hundreds of pending
    /// polls per cancelled timer; at 4096 a few tens.
    pub ring_depth: usize,
}

/// Per-link engine knobs (`hub_core::HubConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LinksConfig {
    /// Downstream messages in flight per node. Default 256.
    pub window: u32,
    /// Upstream messages an edge may have unacknowledged. Default 256.
    pub upstream_window: u32,
    /// Seconds without an ack before the window is sent again. Default 10.
    pub retransmit_timeout: u64,
    /// Largest frame, bytes. Default 16 MiB.
    pub max_frame_bytes: u32,
    /// Largest batch built per send, bytes. Default 256 KiB.
    pub max_batch_bytes: u32,
    /// Bytes a node's queue may hold before a resync. Default 8 MiB.
    pub queue_budget_bytes: usize,
    /// Bytes read from a socket at once. Default 16 KiB (one TLS record).
    pub read_buffer_bytes: usize,
}

/// The shared-memory rings to `cloudcontrol`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RingsConfig {
    /// Directory of the ring files, one `shard-N.ring` per shard.
    /// Default `/dev/shm/apiary`.
    pub dir: PathBuf,
    /// Bytes of each ring (a power of two), for ring files this process
    /// creates; a file that exists (made by cloudcontrol, or an earlier run)
    /// keeps its size, and one of another size than a size set here is an
    /// error. Default: unset, so an existing file's size is adopted and a
    /// new one gets 64 MiB.
    pub ring_bytes: Option<usize>,
    /// Upstream records held in memory while the ring to `cloudcontrol` is
    /// full, bytes; past it, delivery reports are dropped (counted; the
    /// control side sends those objects again, and they are refused as
    /// already held), a node's link going up or down is remembered as state
    /// and reported once there is room, and upstream messages wait in the
    /// edges' outboxes. Default 64 MiB.
    pub backlog_bytes: usize,
}

/// The `/metrics` and `/healthz` endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint; port 0 picks a free one. Default
    /// `127.0.0.1:9091`.
    pub address: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 10000,
            plaintext_port: 0,
            plaintext: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_private_key_file: None,
            node_limit: 1000,
            keepalive_interval: 15,
            missed_keepalives: 3,
            write_timeout: 30,
            handshake_timeout: 10,
            shutdown_retry_after: 5,
            shutdown_grace: 5,
            shards: ShardsConfig::default(),
            links: LinksConfig::default(),
            rings: RingsConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for ShardsConfig {
    fn default() -> Self {
        Self {
            count: 0,
            cpus: Vec::new(),
            io_memory: 1 << 20,
            backlog: 4096,
            handoff_depth: 1024,
            ring_depth: 4096,
        }
    }
}

impl Default for LinksConfig {
    fn default() -> Self {
        let hub = HubConfig::default();
        Self {
            window: hub.window,
            upstream_window: hub.upstream_window,
            retransmit_timeout: hub.retransmit_timeout_ms / 1000,
            max_frame_bytes: hub.max_frame_bytes,
            max_batch_bytes: hub.max_batch_bytes,
            queue_budget_bytes: hub.queue_budget_bytes,
            read_buffer_bytes: 16 << 10,
        }
    }
}

impl Default for RingsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/dev/shm/apiary"),
            ring_bytes: None,
            backlog_bytes: 64 << 20,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 9091)),
        }
    }
}

/// Command-line flags; each one given overrides the file.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(name = "cloudhub", version, about = "Apiary's cloud hub")]
pub struct Flags {
    /// TOML configuration file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// TLS port (`port`).
    #[arg(long)]
    pub port: Option<u16>,
    /// Open the benchmark-only plaintext listener on this port.
    #[arg(long)]
    pub plaintext_port: Option<u16>,
    /// Number of shards (0 = one per CPU).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Most nodes connected at once (`nodeLimit`).
    #[arg(long)]
    pub node_limit: Option<usize>,
    /// Directory of the ring files.
    #[arg(long)]
    pub ring_dir: Option<PathBuf>,
    /// Bytes of each ring (`rings.ringBytes`); unset, existing ring files'
    /// size is adopted.
    #[arg(long)]
    pub ring_bytes: Option<usize>,
    /// CA that signs edge certificates (`tlsCAFile`).
    #[arg(long = "tls-ca-file")]
    pub tls_ca_file: Option<PathBuf>,
    /// Server certificate chain (`tlsCertFile`).
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// Server private key (`tlsPrivateKeyFile`).
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// Address of `/metrics` and `/healthz`.
    #[arg(long)]
    pub metrics_address: Option<SocketAddr>,
    /// Print the effective configuration as TOML-like text and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl Config {
    /// Reads `path` (if any), applies `flags`, and checks the result.
    pub fn load(flags: &Flags) -> Result<Self, ConfigError> {
        let mut config = match &flags.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        if let Some(port) = flags.port {
            config.port = port;
        }
        if let Some(port) = flags.plaintext_port {
            config.plaintext = true;
            config.plaintext_port = port;
        }
        if let Some(n) = flags.shards {
            config.shards.count = n;
        }
        if let Some(n) = flags.node_limit {
            config.node_limit = n;
        }
        if let Some(dir) = &flags.ring_dir {
            config.rings.dir = dir.clone();
        }
        if let Some(bytes) = flags.ring_bytes {
            config.rings.ring_bytes = Some(bytes);
        }
        if let Some(path) = &flags.tls_ca_file {
            config.tls_ca_file = Some(path.clone());
        }
        if let Some(path) = &flags.tls_cert_file {
            config.tls_cert_file = Some(path.clone());
        }
        if let Some(path) = &flags.tls_private_key_file {
            config.tls_private_key_file = Some(path.clone());
        }
        if let Some(address) = flags.metrics_address {
            config.metrics.address = address;
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses one file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |s: String| Err(ConfigError::Invalid(s));
        let tls = [
            &self.tls_ca_file,
            &self.tls_cert_file,
            &self.tls_private_key_file,
        ];
        let set = tls.iter().filter(|p| p.is_some()).count();
        if set != 0 && set != 3 {
            return invalid(
                "tlsCAFile, tlsCertFile and tlsPrivateKeyFile go together: set all three".into(),
            );
        }
        if set == 0 && !self.plaintext {
            return invalid(
                "no listener: set tlsCAFile, tlsCertFile and tlsPrivateKeyFile, or enable the benchmark-only plaintext listener".into(),
            );
        }
        if let Some(bytes) = self.rings.ring_bytes
            && (!bytes.is_power_of_two() || !(4096..=1 << 30).contains(&bytes))
        {
            return invalid(format!(
                "rings.ringBytes must be a power of two between 4096 and 1 GiB, not {bytes}"
            ));
        }
        if self.shard_count() > 4096 {
            return invalid(format!(
                "shards.count of {} is over 4096",
                self.shard_count()
            ));
        }
        if !self.shards.cpus.is_empty() && self.shards.cpus.len() != self.shard_count() {
            return invalid(format!(
                "shards.cpus lists {} CPUs for {} shards",
                self.shards.cpus.len(),
                self.shard_count()
            ));
        }
        if !(1..=32_768).contains(&self.shards.ring_depth) {
            return invalid(format!(
                "shards.ringDepth must be between 1 and 32768 (the kernel's limit), not {}",
                self.shards.ring_depth
            ));
        }
        if self.keepalive_interval == 0 || self.missed_keepalives == 0 {
            return invalid("keepaliveInterval and missedKeepalives must be positive".into());
        }
        if self.links.read_buffer_bytes < 1024 {
            return invalid("links.readBufferBytes must be at least 1024".into());
        }
        if self.node_limit == 0 {
            return invalid("nodeLimit must be positive".into());
        }
        Ok(())
    }

    /// Whether the TLS listener is configured.
    pub fn tls_enabled(&self) -> bool {
        self.tls_ca_file.is_some()
    }

    /// Shards to run: the configured count, or one per online CPU.
    pub fn shard_count(&self) -> usize {
        match self.shards.count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The engine settings of one shard.
    pub fn hub_config(&self) -> HubConfig {
        let shards = self.shard_count();
        HubConfig {
            node_limit: self.node_limit.div_ceil(shards),
            window: self.links.window,
            upstream_window: self.links.upstream_window,
            keepalive_interval_ms: self.keepalive_interval * 1000,
            missed_keepalives: self.missed_keepalives,
            handshake_timeout_ms: self.handshake_timeout * 1000,
            retransmit_timeout_ms: self.links.retransmit_timeout * 1000,
            max_frame_bytes: self.links.max_frame_bytes,
            max_batch_bytes: self.links.max_batch_bytes,
            queue_budget_bytes: self.links.queue_budget_bytes,
        }
    }

    /// The size the ring files are opened with: explicit when configured.
    pub fn ring_size(&self) -> shm::RingSize {
        shm::RingSize::from_setting(self.rings.ring_bytes, shm::DEFAULT_RING_BYTES)
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults_and_needs_a_listener() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config, Config::default());
        assert!(matches!(config.validate(), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn kubeedge_names_are_read() {
        let config: Config = toml::from_str(
            "port = 10001\nnodeLimit = 5\nkeepaliveInterval = 2\nwriteTimeout = 7\n\
             tlsCAFile = 'ca.crt'\ntlsCertFile = 's.crt'\ntlsPrivateKeyFile = 's.key'\n\
             [shards]\ncount = 2\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.port, 10001);
        assert_eq!(config.write_timeout(), Duration::from_secs(7));
        let hub = config.hub_config();
        assert_eq!(hub.node_limit, 3, "5 nodes over 2 shards");
        assert_eq!(hub.keepalive_interval_ms, 2000);
    }

    #[test]
    fn unknown_and_partial_settings_are_refused() {
        assert!(toml::from_str::<Config>("prot = 1").is_err());
        let config: Config = toml::from_str("tlsCAFile = 'ca.crt'").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("go together"), "{err}");
        let config: Config = toml::from_str("plaintext = true\n[rings]\nringBytes = 5000").unwrap();
        assert!(config.validate().is_err());
        let config: Config = toml::from_str("plaintext = true\n[shards]\nringDepth = 0").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("shards.ringDepth"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, "plaintext = true\nport = 1\n").unwrap();
        let flags = Flags {
            config: Some(path),
            port: Some(2),
            shards: Some(3),
            ..Flags::default()
        };
        let config = Config::load(&flags).unwrap();
        assert_eq!((config.port, config.shard_count()), (2, 3));
        assert_eq!(
            config.ring_size(),
            shm::RingSize::Default(shm::DEFAULT_RING_BYTES),
            "unset: adopted from existing files"
        );
        let flags = Flags {
            ring_bytes: Some(1 << 20),
            ..flags
        };
        let config = Config::load(&flags).unwrap();
        assert_eq!(config.ring_size(), shm::RingSize::Configured(1 << 20));
    }
}
