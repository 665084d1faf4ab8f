//! Status patches to the API server, retried until they land.
//!
//! [`PatchQueue`] is the sans-IO part: status changes go in
//! ([`PatchQueue::handle_change`]), patches to send come out
//! ([`PatchQueue::poll_patch`]), and each result comes back
//! ([`PatchQueue::handle_result`]). Changes to one object are sent one at a
//! time and in order; a newer change of the same kind replaces one still
//! waiting, so the queue holds at most two changes per Node (link and
//! reported status) and one per Pod or Device however long the API server
//! is away. A failed patch is retried with exponential backoff (200 ms
//! doubling to 30 s) when the failure can pass (no answer, 5xx, 408, 409,
//! 429) and dropped when it cannot (other 4xx: the object is gone or the
//! patch is refused). [`write_patches`] is the tokio glue.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use ::kube::Client;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::apiserver::apply_change;
use crate::core::StatusChange;

/// Patches in flight at once.
pub const MAX_IN_FLIGHT: usize = 16;
/// First retry delay; doubles per failed attempt.
pub const RETRY_FIRST_MS: u64 = 200;
/// Longest retry delay.
pub const RETRY_MAX_MS: u64 = 30_000;

/// The object a change patches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Node(String),
    /// A node's `NodeSync` checkpoint.
    Sync(String),
    Pod {
        namespace: String,
        name: String,
    },
    Device {
        namespace: String,
        name: String,
    },
}

impl Target {
    pub fn of(change: &StatusChange) -> Target {
        match change {
            StatusChange::NodeLink { node, .. } | StatusChange::Node { node, .. } => {
                Target::Node(node.clone())
            }
            StatusChange::Pod {
                namespace, name, ..
            } => Target::Pod {
                namespace: namespace.clone(),
                name: name.clone(),
            },
            StatusChange::Device {
                namespace, name, ..
            } => Target::Device {
                namespace: namespace.clone(),
                name: name.clone(),
            },
            StatusChange::Checkpoint { node, .. } => Target::Sync(node.clone()),
        }
    }
}

/// What became of a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Failed in a way that can pass: send again later.
    Retry,
    /// Refused for good: drop it.
    GiveUp,
}

impl Outcome {
    /// Classifies a patch result.
    pub fn of(result: &Result<(), ::kube::Error>) -> Outcome {
        match result {
            Ok(()) => Outcome::Done,
            Err(::kube::Error::Api(s)) if (400..500).contains(&s.code) => {
                if matches!(s.code, 408 | 409 | 429) {
                    Outcome::Retry
                } else {
                    Outcome::GiveUp
                }
            }
            Err(_) => Outcome::Retry,
        }
    }
}

#[derive(Debug, Default)]
struct Pending {
    /// In order; the front is the one in flight, if any.
    changes: VecDeque<StatusChange>,
    in_flight: bool,
    /// Failed attempts of the front change.
    failures: u32,
    due_ms: u64,
}

/// See the module doc. Times are milliseconds on any monotonic clock.
#[derive(Debug, Default)]
pub struct PatchQueue {
    objects: BTreeMap<Target, Pending>,
    /// Objects with a change to send and none in flight, by due time.
    due: BTreeSet<(u64, Target)>,
    in_flight: usize,
}

fn same_kind(a: &StatusChange, b: &StatusChange) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

impl PatchQueue {
    /// A new status change.
    pub fn handle_change(&mut self, change: StatusChange, now_ms: u64) {
        let target = Target::of(&change);
        let p = self.objects.entry(target.clone()).or_default();
        // A waiting change of the same kind is outdated by this one (the
        // one in flight, at the front, is left alone).
        let skip = usize::from(p.in_flight);
        if let Some(i) = p
            .changes
            .iter()
            .skip(skip)
            .position(|c| same_kind(c, &change))
        {
            p.changes.remove(i + skip);
            if i + skip == 0 {
                p.failures = 0;
            }
        }
        let was_waiting = !p.in_flight && !p.changes.is_empty();
        p.changes.push_back(change);
        if !p.in_flight && !was_waiting {
            p.due_ms = now_ms;
            self.due.insert((now_ms, target));
        }
    }

    /// The next patch to send, if one is due and fewer than
    /// [`MAX_IN_FLIGHT`] are in flight.
    pub fn poll_patch(&mut self, now_ms: u64) -> Option<(Target, StatusChange)> {
        if self.in_flight >= MAX_IN_FLIGHT {
            return None;
        }
        let (due, _) = self.due.first()?;
        if *due > now_ms {
            return None;
        }
        let (_, target) = self.due.pop_first()?;
        let p = self.objects.get_mut(&target)?;
        let change = p.changes.front()?.clone();
        p.in_flight = true;
        self.in_flight += 1;
        Some((target, change))
    }

    /// When [`PatchQueue::poll_patch`] has something next (None: nothing
    /// waits, or the in-flight limit is reached).
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.in_flight >= MAX_IN_FLIGHT {
            return None;
        }
        self.due.first().map(|(t, _)| *t)
    }

    /// The result of the patch sent for `target`.
    pub fn handle_result(&mut self, target: &Target, outcome: Outcome, now_ms: u64) {
        let Some(p) = self.objects.get_mut(target) else {
            return;
        };
        if !p.in_flight {
            return;
        }
        p.in_flight = false;
        self.in_flight -= 1;
        match outcome {
            Outcome::Done | Outcome::GiveUp => {
                p.changes.pop_front();
                p.failures = 0;
                p.due_ms = now_ms;
            }
            Outcome::Retry => {
                p.failures += 1;
                let delay = RETRY_FIRST_MS
                    .saturating_mul(1 << (p.failures - 1).min(20))
                    .min(RETRY_MAX_MS);
                p.due_ms = now_ms + delay;
            }
        }
        if p.changes.is_empty() {
            self.objects.remove(target);
        } else {
            self.due.insert((p.due_ms, target.clone()));
        }
    }

    /// Changes not yet patched (in flight included).
    pub fn len(&self) -> usize {
        self.objects.values().map(|p| p.changes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// Sends the status changes from `rx` to the API server, retrying as
/// [`PatchQueue`] says. Returns when `rx` is closed.
pub async fn write_patches(client: Client, mut rx: mpsc::UnboundedReceiver<StatusChange>) {
    let start = Instant::now();
    let now = || start.elapsed().as_millis() as u64;
    let mut queue = PatchQueue::default();
    let mut running = JoinSet::new();
    loop {
        while let Some((target, change)) = queue.poll_patch(now()) {
            let client = client.clone();
            running.spawn(async move {
                let r = apply_change(&client, &change).await;
                (target, change, r)
            });
        }
        let wake = queue
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(start + Duration::from_millis(t)));
        tokio::select! {
            change = rx.recv() => match change {
                Some(c) => queue.handle_change(c, now()),
                None => return,
            },
            Some(done) = running.join_next() => {
                let Ok((target, change, result)) = done else { continue };
                let outcome = Outcome::of(&result);
                if let Err(e) = &result {
                    match outcome {
                        Outcome::GiveUp => tracing::warn!("Kubernetes status update {change:?} refused: {e}"),
                        _ => tracing::debug!("Kubernetes status update {change:?}: {e}; retrying"),
                    }
                }
                queue.handle_result(&target, outcome, now());
            }
            _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn link(node: &str, ready: bool) -> StatusChange {
        StatusChange::NodeLink {
            node: node.into(),
            ready,
            reason: "test",
            at_ms: 0,
        }
    }

    fn pod(name: &str, phase: &str) -> StatusChange {
        StatusChange::Pod {
            namespace: "default".into(),
            name: name.into(),
            status: json!({ "phase": phase }),
        }
    }

    #[test]
    fn a_failed_patch_is_retried_with_growing_delays_then_dropped_when_done() {
        let mut q = PatchQueue::default();
        q.handle_change(pod("web", "Running"), 0);
        let (t, c) = q.poll_patch(0).unwrap();
        assert_eq!(c, pod("web", "Running"));
        assert!(q.poll_patch(0).is_none(), "one patch per object at a time");
        q.handle_result(&t, Outcome::Retry, 10);
        assert_eq!(q.poll_timeout(), Some(210));
        assert!(q.poll_patch(209).is_none());
        let (t, c) = q.poll_patch(210).unwrap();
        assert_eq!(c, pod("web", "Running"));
        q.handle_result(&t, Outcome::Retry, 300);
        assert_eq!(q.poll_timeout(), Some(700), "the delay doubles");
        let (t, _) = q.poll_patch(700).unwrap();
        q.handle_result(&t, Outcome::Done, 710);
        assert!(q.is_empty());
        assert_eq!(q.poll_timeout(), None);
    }

    #[test]
    fn the_delay_stops_growing_at_the_maximum() {
        let mut q = PatchQueue::default();
        q.handle_change(pod("web", "Running"), 0);
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..30 {
            let (t, _) = q.poll_patch(now).unwrap();
            q.handle_result(&t, Outcome::Retry, now);
            let next = q.poll_timeout().unwrap();
            delays.push(next - now);
            now = next;
        }
        assert_eq!(delays[..3], [200, 400, 800]);
        assert_eq!(delays.iter().max(), Some(&RETRY_MAX_MS));
        assert_eq!(delays.last(), Some(&RETRY_MAX_MS));
    }

    #[test]
    fn a_newer_change_replaces_a_waiting_one_but_not_the_one_in_flight() {
        let mut q = PatchQueue::default();
        q.handle_change(pod("web", "Pending"), 0);
        let (t, c) = q.poll_patch(0).unwrap();
        assert_eq!(c, pod("web", "Pending"));
        q.handle_change(pod("web", "Running"), 1);
        q.handle_change(pod("web", "Failed"), 2);
        assert_eq!(q.len(), 2, "in flight + the latest");
        q.handle_result(&t, Outcome::Done, 3);
        let (t, c) = q.poll_patch(3).unwrap();
        assert_eq!(c, pod("web", "Failed"));
        q.handle_result(&t, Outcome::Done, 4);
        assert!(q.is_empty());
    }

    #[test]
    fn a_node_keeps_its_link_and_status_changes_in_order() {
        let mut q = PatchQueue::default();
        let status = StatusChange::Node {
            node: "edge-1".into(),
            status: json!({"conditions": []}),
        };
        q.handle_change(link("edge-1", true), 0);
        q.handle_change(status.clone(), 0);
        q.handle_change(link("edge-1", false), 0);
        // Waiting: link(true) was replaced by link(false), now last.
        let (t, c) = q.poll_patch(0).unwrap();
        assert_eq!(c, status);
        q.handle_result(&t, Outcome::Done, 1);
        let (t, c) = q.poll_patch(1).unwrap();
        assert_eq!(c, link("edge-1", false));
        q.handle_result(&t, Outcome::GiveUp, 2);
        assert!(q.is_empty());
    }

    #[test]
    fn objects_are_patched_side_by_side_up_to_the_limit() {
        let mut q = PatchQueue::default();
        for i in 0..MAX_IN_FLIGHT + 4 {
            q.handle_change(pod(&format!("p{i}"), "Running"), 0);
        }
        let sent: Vec<_> = std::iter::from_fn(|| q.poll_patch(0)).collect();
        assert_eq!(sent.len(), MAX_IN_FLIGHT);
        assert_eq!(q.poll_timeout(), None, "nothing more until one returns");
        q.handle_result(&sent[0].0, Outcome::Done, 1);
        assert!(q.poll_patch(1).is_some());
    }

    #[test]
    fn only_passing_failures_are_retried() {
        let api = |code| {
            Err(::kube::Error::Api(Box::new(
                ::kube::core::Status::failure("x", "y").with_code(code),
            )))
        };
        assert_eq!(Outcome::of(&Ok(())), Outcome::Done);
        for code in [408, 409, 429, 500, 503] {
            assert_eq!(Outcome::of(&api(code)), Outcome::Retry, "{code}");
        }
        for code in [400, 403, 404, 422] {
            assert_eq!(Outcome::of(&api(code)), Outcome::GiveUp, "{code}");
        }
    }
}
