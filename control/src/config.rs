//! Command line and configuration file of `cloudcontrol`. Every setting has
//! a documented default; a TOML file (`--config`) may set them, flags
//! override the file.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use shm::RingSize;

/// `cloudcontrol`: Apiary's cloud controllers.
#[derive(Debug, Parser)]
#[command(name = "cloudcontrol", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controllers (the default).
    Run(RunArgs),
    /// Print a join token for an edge node.
    Token {
        /// Data directory holding the CA and the token key.
        #[arg(long, default_value = "/var/lib/apiary/cloudcontrol")]
        data_dir: PathBuf,
        /// How long the token is valid (30s, 90m, 24h, 7d).
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
    /// Print the Device and DeviceModel CRDs (YAML).
    Crds,
    /// Show observed state like kubectl: nodes, pods or devices.
    Get {
        what: String,
        #[arg(long, default_value = "/var/lib/apiary/cloudcontrol")]
        data_dir: PathBuf,
        /// Status directory (default DATA/status).
        #[arg(long)]
        status_dir: Option<PathBuf>,
    },
}

/// Flags of `cloudcontrol run`.
#[derive(Debug, Default, Clone, Args)]
pub struct RunArgs {
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of Kubernetes manifests (the embedded source).
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub ring_dir: Option<PathBuf>,
    #[arg(long)]
    pub shards: Option<u16>,
    /// Bytes of each ring (a power of two). Unset, the size of existing
    /// ring files is adopted and new ones get 64 MiB; set, an existing file
    /// of another size is an error.
    #[arg(long)]
    pub ring_bytes: Option<usize>,
    #[arg(long)]
    pub cert_address: Option<String>,
    #[arg(long)]
    pub status_dir: Option<PathBuf>,
    #[arg(long)]
    pub poll_interval_ms: Option<u64>,
    /// Read desired state from Kubernetes (the kubeconfig or in-cluster
    /// service account) instead of a manifest directory.
    #[arg(long)]
    pub kube: bool,
}

/// The configuration file; field names follow KubeEdge's where they mean
/// the same.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Manifest directory. Default: none (required until the Kubernetes
    /// source exists).
    pub manifests: Option<PathBuf>,
    /// Data directory: CA, certificates, token key, LMDB store. Default
    /// `/var/lib/apiary/cloudcontrol`.
    pub data_dir: PathBuf,
    /// Status directory. Default `DATA/status`.
    pub status_dir: Option<PathBuf>,
    /// Ring files, shared with cloudhub. Default `/dev/shm/apiary`.
    pub ring_dir: PathBuf,
    /// Shards (ring files); 0 = one per online CPU, like cloudhub. Default 0.
    pub shards: u16,
    /// Bytes of each ring, for ring files this process creates; a file that
    /// exists (made by cloudhub, or an earlier run) keeps its size, and one
    /// of another size than a size set here is an error. Default: unset, so
    /// an existing file's size is adopted and a new one gets 64 MiB.
    pub ring_bytes: Option<usize>,
    /// Address of the certificate bootstrap endpoint. Default
    /// `0.0.0.0:10002`.
    pub cert_address: String,
    /// SANs of the server certificate. Default `["127.0.0.1", "localhost"]`.
    pub advertise_address: Vec<String>,
    /// Lifetime of edge certificates in days. Default 365.
    pub edge_cert_validity_days: u32,
    /// Manifest directory poll interval. Default 500 ms.
    pub poll_interval_ms: u64,
    /// Use Kubernetes as the source. Default: false, or true when no
    /// manifest directory is given and a kubeconfig exists (`KUBECONFIG` or
    /// `~/.kube/config`).
    pub kube: bool,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            manifests: None,
            data_dir: PathBuf::from("/var/lib/apiary/cloudcontrol"),
            status_dir: None,
            ring_dir: PathBuf::from("/dev/shm/apiary"),
            shards: 0,
            ring_bytes: None,
            cert_address: "0.0.0.0:10002".into(),
            advertise_address: vec!["127.0.0.1".into(), "localhost".into()],
            edge_cert_validity_days: 365,
            poll_interval_ms: 500,
            kube: false,
        }
    }
}

impl ControlConfig {
    /// The file (if any) with the flags on top.
    pub fn from_args(args: &RunArgs) -> Result<ControlConfig, String> {
        let mut c = match &args.config {
            Some(path) => load(path)?,
            None => ControlConfig::default(),
        };
        if let Some(v) = &args.manifests {
            c.manifests = Some(v.clone());
        }
        if let Some(v) = &args.data_dir {
            c.data_dir = v.clone();
        }
        if let Some(v) = &args.status_dir {
            c.status_dir = Some(v.clone());
        }
        if let Some(v) = &args.ring_dir {
            c.ring_dir = v.clone();
        }
        if let Some(v) = args.shards {
            c.shards = v;
        }
        if let Some(v) = args.ring_bytes {
            c.ring_bytes = Some(v);
        }
        if let Some(v) = &args.cert_address {
            c.cert_address = v.clone();
        }
        if let Some(v) = args.poll_interval_ms {
            c.poll_interval_ms = v;
        }
        if args.kube {
            c.kube = true;
        }
        if c.manifests.is_none() && !c.kube {
            let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"));
            c.kube = std::env::var_os("KUBECONFIG").is_some() || home.is_some_and(|h| h.exists());
        }
        if c.shards == 0 {
            c.shards = std::thread::available_parallelism().map_or(1, |n| n.get().min(1024) as u16);
        }
        if c.poll_interval_ms == 0 {
            return Err("pollIntervalMs must be at least 1".into());
        }
        Ok(c)
    }

    /// The size the ring files are opened with: explicit when configured.
    pub fn ring_size(&self) -> RingSize {
        RingSize::from_setting(self.ring_bytes, shm::DEFAULT_RING_BYTES)
    }

    /// The status directory in effect.
    pub fn status_dir(&self) -> PathBuf {
        self.status_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("status"))
    }
}

fn load(path: &Path) -> Result<ControlConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "dataDir = \"/d\"\nshards = 3\nringBytes = 1024\n").unwrap();
        let args = RunArgs {
            config: Some(f.clone()),
            shards: Some(5),
            ..RunArgs::default()
        };
        let c = ControlConfig::from_args(&args).unwrap();
        assert_eq!(
            (c.shards, c.ring_bytes, c.data_dir.clone()),
            (5, Some(1024), PathBuf::from("/d"))
        );
        assert_eq!(c.status_dir(), PathBuf::from("/d/status"));
        assert_eq!(c.ring_size(), RingSize::Configured(1024));
        let c = ControlConfig::from_args(&RunArgs::default()).unwrap();
        assert_eq!(
            c.ring_size(),
            RingSize::Default(shm::DEFAULT_RING_BYTES),
            "unset: adopted from existing files"
        );
        std::fs::write(&f, "nope = 1\n").unwrap();
        assert!(
            ControlConfig::from_args(&args)
                .unwrap_err()
                .contains("nope")
        );
    }
}
