//! Edged's core: the kubelet-lite of edgecore, with no I/O.
//!
//! [`Edged`] holds the Pods bound to this node (as MetaManager stores
//! them) and, for each, what the container runtime last reported
//! ([`Observed`]: sandboxes and containers, found by the kubelet's CRI
//! labels, so a restarted edgecore adopts what it finds). From the two it
//! decides, as the kubelet's `SyncPod` does, the next runtime operations
//! ([`Op`]: run a sandbox, pull and start a container, stop, remove) with
//! init containers first and in order, restart policies and the kubelet's
//! crash-loop back-off, and the Pod status the API server would hold
//! (phase, conditions, container statuses), reported only when it changes.
//! The glue (edgecore's CRI client) observes, runs the operations and
//! reports back; time is passed in as Unix milliseconds.
//!
//! Call order: [`Edged::handle_pod`] / [`Edged::handle_pod_deleted`] as
//! MetaManager commits; [`Edged::poll_sync`] names a pod to observe; the
//! glue lists that pod's sandboxes and containers and passes them to
//! [`Edged::handle_observed`], which returns the operations to run; the glue
//! runs them in order, reports a failure with [`Edged::handle_failed`] (and
//! stops that batch), then [`Edged::handle_done`]; [`Edged::poll_status`]
//! yields changed Pod statuses; [`Edged::poll_timeout`] says when to call
//! `poll_sync` again.
//!
//! [`logs`] renders the containers' CRI log files as `kubectl logs` shows
//! them, for whatever serves them.
//!
//! It must never depend on an async runtime, the CRI or gRPC crates, the
//! file system or a clock.

mod backoff;
mod edged;
mod env;
pub mod logs;
mod observed;
mod plan;
mod pod;
mod probes;
mod quantity;
mod spec;
mod status;

pub use backoff::Backoff;
pub use edged::{Edged, EdgedConfig, PodKey};
pub use observed::{ContainerObs, ContainerState, Observed, SandboxObs};
pub use plan::{Failure, Op, Volume};
pub use pod::{Container, Objects, Pod, PodError, PullPolicy, RestartPolicy};
pub use probes::{ProbeAction, ProbeKind, ProbeRequest};
pub use spec::{ContainerSpec, Mount, SandboxSpec, labels};

#[cfg(test)]
mod tests;
