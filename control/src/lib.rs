//! `cloudcontrol`: the cloud control process.
//!
//! tokio and kube-rs controllers that turn desired state (a Kubernetes API or
//! a manifest directory) into per-node messages written into the shards'
//! rings, apply what the edges report, checkpoint delivery, and issue the
//! edges' certificates. It must never depend on glommio or monoio, and
//! decides which node needs which object in plain, tested functions rather
//! than inside reconcilers.
