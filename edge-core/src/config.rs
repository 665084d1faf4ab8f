//! edgecore's configuration file (TOML), named after KubeEdge's edgecore
//! configuration where the meaning is the same.
//!
//! ```toml
//! [database]
//! dataSource = "/var/lib/apiary/edge/data"   # LMDB directory
//!
//! [modules.edgeHub]
//! server = "cloud.example:10000"             # cloudhub, TLS
//! httpServer = "cloud.example:10002"         # certificate bootstrap
//! tlsCaFile = "/var/lib/apiary/edge/ca/rootCA.crt"
//! tlsCertFile = "/var/lib/apiary/edge/certs/server.crt"
//! tlsPrivateKeyFile = "/var/lib/apiary/edge/certs/server.key"
//! heartbeat = 15                             # seconds
//!
//! [modules.edged]
//! hostnameOverride = "edge-1"                # the node name
//! nodeStatusUpdateFrequency = 10             # seconds
//! remoteRuntimeEndpoint = "unix:///run/containerd/containerd.sock"
//! rootDirectory = "/var/lib/edged"           # pod volumes
//! podLogsDir = "/var/log/pods"               # container logs
//! maxPods = 110                              # capacity.pods
//!
//! [modules.metaManager.metaServer]
//! server = "127.0.0.1:10550"                 # off loopback: TLS and auth
//! tlsCertFile = ""                           # HTTPS when set, with the key
//! tlsPrivateKeyFile = ""
//! tlsCaFile = ""                             # client certificates
//! tokenFile = ""                             # bearer token
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::DEFAULT_MAP_SIZE;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{path}: {field} must be set")]
    Missing { path: PathBuf, field: &'static str },
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct EdgeConfig {
    pub database: Database,
    pub modules: Modules,
}

/// `[database]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Database {
    /// Directory of the LMDB environment. Default `/var/lib/apiary/edge/data`.
    pub data_source: PathBuf,
    /// LMDB map size in bytes (address space, not memory). Default 256 MiB.
    pub map_size: usize,
}

impl Default for Database {
    fn default() -> Self {
        Self {
            data_source: PathBuf::from("/var/lib/apiary/edge/data"),
            map_size: DEFAULT_MAP_SIZE,
        }
    }
}

/// `[modules]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Modules {
    pub edge_hub: EdgeHub,
    pub edged: Edged,
    pub meta_manager: MetaManager,
    /// `[modules.eventBus]`: the devices' MQTT broker, embedded (default,
    /// 127.0.0.1:1883) or external (`mqttMode = "external"`). Not written
    /// by `edgecore join`: its defaults apply until the file names it.
    #[serde(skip_serializing)]
    pub event_bus: crate::broker::EventBusConfig,
}

/// `[modules.edgeHub]`: the link to cloudhub.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct EdgeHub {
    /// cloudhub's TLS address, `host:port`. Required.
    pub server: String,
    /// Name the cloud's certificate must carry. Default: the host of `server`.
    pub server_name: String,
    /// The certificate bootstrap endpoint, `host:port`. Default: the host of
    /// `server`, port 10002.
    pub http_server: String,
    /// Not used: renewal is authenticated by the node's certificate. Read
    /// so that a file written by an older `edgecore join` still loads;
    /// never written.
    #[serde(skip_serializing)]
    pub token: String,
    pub tls_ca_file: PathBuf,
    pub tls_cert_file: PathBuf,
    pub tls_private_key_file: PathBuf,
    /// Keepalive interval in seconds until the cloud names one. Default 15.
    pub heartbeat: u64,
    /// Request a new certificate before the current one expires. Default true.
    pub rotate_certificates: bool,
}

impl Default for EdgeHub {
    fn default() -> Self {
        Self {
            server: String::new(),
            server_name: String::new(),
            http_server: String::new(),
            token: String::new(),
            tls_ca_file: PathBuf::from("/var/lib/apiary/edge/ca/rootCA.crt"),
            tls_cert_file: PathBuf::from("/var/lib/apiary/edge/certs/server.crt"),
            tls_private_key_file: PathBuf::from("/var/lib/apiary/edge/certs/server.key"),
            heartbeat: 15,
            rotate_certificates: true,
        }
    }
}

impl EdgeHub {
    /// The name to verify the cloud's certificate against.
    pub fn server_name(&self) -> String {
        if self.server_name.is_empty() {
            host_of(&self.server).to_owned()
        } else {
            self.server_name.clone()
        }
    }

    /// The bootstrap endpoint, defaulted from `server`.
    pub fn http_server(&self) -> String {
        if self.http_server.is_empty() {
            format!("{}:10002", host_of(&self.server))
        } else {
            self.http_server.clone()
        }
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// `[modules.edged]`: this node, and how its pods run (KubeEdge's names).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Edged {
    /// The node name; must be the CN of the certificate. Required.
    pub hostname_override: String,
    /// Seconds between node status reports. Default 10.
    pub node_status_update_frequency: u64,
    /// Run the node's pods. Default true; without a reachable runtime the
    /// pods stay Pending with the reason, and everything else runs.
    pub enable: bool,
    /// The CRI runtime service. Default `unix:///run/containerd/containerd.sock`.
    pub remote_runtime_endpoint: String,
    /// The CRI image service. Default: empty, the runtime endpoint.
    pub remote_image_endpoint: String,
    /// The sandbox (pause) image the runtime is configured with; checked
    /// at start and reported missing. Default `registry.k8s.io/pause:3.6`,
    /// containerd 1.6's default.
    pub pod_sandbox_image: String,
    /// Where pod volumes live (`pods/<uid>/volumes/...`). Default `/var/lib/edged`.
    pub root_directory: String,
    /// Where the runtime writes container logs, as the kubelet's
    /// `podLogsDir`. Default `/var/log/pods`.
    pub pod_logs_dir: String,
    /// `cgroupfs` (default; the only driver supported yet: pods get the
    /// runtime's default cgroup parent, and another value is warned about).
    pub cgroup_driver: String,
    /// The node's InternalIP. Default: empty, the address this host
    /// reaches the cloud from.
    pub node_ip: String,
    /// Seconds a runtime call may take (image pulls included). Default 120.
    pub runtime_request_timeout: u64,
    /// The pods this node reports it can hold (`capacity.pods`), as the
    /// kubelet's `maxPods`. Default 110.
    pub max_pods: u32,
}

impl Default for Edged {
    fn default() -> Self {
        Self {
            hostname_override: String::new(),
            node_status_update_frequency: 10,
            enable: true,
            remote_runtime_endpoint: "unix:///run/containerd/containerd.sock".to_owned(),
            remote_image_endpoint: String::new(),
            pod_sandbox_image: "registry.k8s.io/pause:3.6".to_owned(),
            root_directory: "/var/lib/edged".to_owned(),
            pod_logs_dir: "/var/log/pods".to_owned(),
            cgroup_driver: "cgroupfs".to_owned(),
            node_ip: String::new(),
            runtime_request_timeout: 120,
            max_pods: 110,
        }
    }
}

/// `[modules.metaManager]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct MetaManager {
    pub meta_server: MetaServer,
}

/// `[modules.metaManager.metaServer]`: the local Kubernetes-style API.
///
/// On a loopback address it serves plain HTTP to anyone on the node, as
/// KubeEdge's does. Anywhere else it must serve HTTPS (`tlsCertFile`,
/// `tlsPrivateKeyFile`) and authenticate its clients: by a certificate
/// signed by `tlsCaFile`, by the bearer token in `tokenFile`, or both (then
/// both are required). It holds the node's Secrets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct MetaServer {
    /// Default true.
    pub enable: bool,
    /// Listen address. Default `127.0.0.1:10550`.
    pub server: String,
    /// Serve HTTPS with this certificate chain (PEM). Default empty: HTTP.
    pub tls_cert_file: String,
    /// The certificate's private key (PEM).
    pub tls_private_key_file: String,
    /// Require client certificates signed by this CA (PEM). Default empty.
    pub tls_ca_file: String,
    /// Require `Authorization: Bearer <token>` with the token this file
    /// holds (surrounding whitespace ignored). Default empty.
    pub token_file: String,
}

impl Default for MetaServer {
    fn default() -> Self {
        Self {
            enable: true,
            server: "127.0.0.1:10550".to_owned(),
            tls_cert_file: String::new(),
            tls_private_key_file: String::new(),
            tls_ca_file: String::new(),
            token_file: String::new(),
        }
    }
}

impl MetaServer {
    /// Why this MetaServer may not be served as configured, if it may not:
    /// off loopback it needs TLS and a way to authenticate clients.
    pub fn insecure(&self) -> Option<String> {
        let tls = !self.tls_cert_file.is_empty();
        if tls == self.tls_private_key_file.is_empty() {
            return Some("tlsCertFile and tlsPrivateKeyFile go together".to_owned());
        }
        if !self.tls_ca_file.is_empty() && !tls {
            return Some("tlsCaFile needs tlsCertFile and tlsPrivateKeyFile".to_owned());
        }
        if !self.enable || loopback(&self.server) {
            return None;
        }
        let auth = !self.tls_ca_file.is_empty() || !self.token_file.is_empty();
        (!tls || !auth).then(|| {
            format!(
                "server {} is not a loopback address, and the MetaServer serves the node's \
                 Secrets: set tlsCertFile and tlsPrivateKeyFile, and tlsCaFile or tokenFile",
                self.server
            )
        })
    }
}

/// Whether `addr` (host:port) is a loopback address.
fn loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl EdgeConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        let missing = |field| ConfigError::Missing {
            path: path.to_owned(),
            field,
        };
        if config.modules.edge_hub.server.is_empty() {
            return Err(missing("modules.edgeHub.server"));
        }
        if config.modules.edged.hostname_override.is_empty() {
            return Err(missing("modules.edged.hostnameOverride"));
        }
        if let Some(detail) = config.modules.meta_manager.meta_server.insecure() {
            let detail = format!("[modules.metaManager.metaServer]: {detail}");
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                detail,
            });
        }
        Ok(config)
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeedge_names_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edgecore.toml");
        std::fs::write(
            &path,
            "[modules.edgeHub]\nserver = \"10.0.0.1:10000\"\nheartbeat = 5\n\
             [modules.edged]\nhostnameOverride = \"edge-1\"\n",
        )
        .unwrap();
        let c = EdgeConfig::load(&path).unwrap();
        assert_eq!(c.modules.edge_hub.heartbeat, 5);
        assert_eq!(c.modules.edge_hub.http_server(), "10.0.0.1:10002");
        assert_eq!(c.modules.edge_hub.server_name(), "10.0.0.1");
        assert_eq!(c.modules.meta_manager.meta_server.server, "127.0.0.1:10550");
        assert_eq!(c.modules.edged.node_status_update_frequency, 10);
        // What we write reads back the same.
        std::fs::write(&path, c.to_toml()).unwrap();
        assert_eq!(EdgeConfig::load(&path).unwrap(), c);
    }

    #[test]
    fn a_metaserver_off_loopback_needs_tls_and_authentication() {
        let ms = |server: &str, cert: &str, ca: &str, token: &str| MetaServer {
            server: server.to_owned(),
            tls_cert_file: cert.to_owned(),
            tls_private_key_file: cert.to_owned(),
            tls_ca_file: ca.to_owned(),
            token_file: token.to_owned(),
            ..MetaServer::default()
        };
        for ok in [
            "127.0.0.1:10550",
            "localhost:10550",
            "[::1]:10550",
            "127.0.0.2:0",
        ] {
            assert_eq!(ms(ok, "", "", "").insecure(), None, "{ok}");
        }
        for open in [
            "0.0.0.0:10550",
            "10.0.0.5:10550",
            "[::]:10550",
            "edge.local:10550",
        ] {
            let e = ms(open, "", "", "").insecure().unwrap();
            assert!(e.contains("not a loopback address"), "{e}");
            assert!(
                ms(open, "c.pem", "", "").insecure().is_some(),
                "TLS, no auth"
            );
            assert!(
                ms(open, "", "", "t").insecure().is_some(),
                "token in the clear"
            );
            assert_eq!(ms(open, "c.pem", "ca.pem", "").insecure(), None);
            assert_eq!(ms(open, "c.pem", "", "t").insecure(), None);
        }
        let half = MetaServer {
            tls_cert_file: "c.pem".to_owned(),
            ..MetaServer::default()
        };
        assert!(half.insecure().unwrap().contains("go together"));
        assert!(ms("127.0.0.1:1", "", "ca.pem", "").insecure().is_some());
    }

    #[test]
    fn clear_errors_for_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[modules.edgeHub]\nheartbeat = \"soon\"\n").unwrap();
        let e = EdgeConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("heartbeat"), "{e}");
        std::fs::write(&path, "").unwrap();
        let e = EdgeConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("modules.edgeHub.server must be set"), "{e}");
    }
}
