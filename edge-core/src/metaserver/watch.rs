//! Live watch subscriptions: the daemon publishes every committed change,
//! each open watch receives the ones of its kind and namespace; and the
//! pod statuses Edged reports, which watches carry as `MODIFIED` events of
//! an unchanged resourceVersion (the status is the edge's, not the cloud's).

use futures_channel::mpsc;

use crate::store::{Change, ChangeType};

#[derive(Debug)]
struct Subscription {
    kind: String,
    namespace: Option<String>,
    tx: mpsc::UnboundedSender<(Change, bool)>,
}

/// The open watches of the MetaServer.
#[derive(Debug, Default)]
pub struct Watches {
    subs: Vec<Subscription>,
}

impl Watches {
    /// A new watch on `kind` (in `namespace`, or all).
    pub fn subscribe(
        &mut self,
        kind: &str,
        namespace: Option<&str>,
    ) -> mpsc::UnboundedReceiver<(Change, bool)> {
        let (tx, rx) = mpsc::unbounded();
        self.subs.push(Subscription {
            kind: kind.to_owned(),
            namespace: namespace.map(str::to_owned),
            tx,
        });
        rx
    }

    /// Hands `changes` to the watches they concern; drops closed watches.
    pub fn publish(&mut self, changes: &[Change]) {
        self.send(changes, false);
    }

    /// Hands a pod whose status changed (and nothing else) to its watches.
    pub fn publish_status(&mut self, change: Change) {
        self.send(&[change], true);
    }

    fn send(&mut self, changes: &[Change], status_only: bool) {
        self.subs.retain(|s| !s.tx.is_closed());
        for c in changes {
            let key = &c.object.key;
            for s in &self.subs {
                let ns_ok = s.namespace.as_deref().is_none_or(|ns| ns == key.namespace);
                if s.kind == key.kind && ns_ok {
                    let _ = s.tx.unbounded_send((c.clone(), status_only));
                }
            }
        }
    }

    /// Open watches.
    pub fn len(&self) -> usize {
        self.subs.iter().filter(|s| !s.tx.is_closed()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a watch with a selector sends of each change, by the API server's
/// rules for an object entering or leaving the selection: a change that
/// brings an object in is `ADDED`, one that takes it out is `DELETED`, and
/// changes to objects the client does not hold are not sent. A watch
/// resumed from a resourceVersion does not know what its client holds, so
/// the first change of an object it cannot place is sent as the client
/// may need it (an extra `DELETED` is a no-op for an informer).
#[derive(Debug, Default)]
pub(super) struct Selection {
    resumed: bool,
    /// Objects seen in this watch: whether the client holds each.
    held: std::collections::HashMap<String, bool>,
}

impl Selection {
    pub(super) fn new(resumed: bool) -> Selection {
        Selection {
            resumed,
            held: std::collections::HashMap::new(),
        }
    }

    /// The event to send for `change` of object `key`, which the selector
    /// does or does not select now; None: nothing.
    pub(super) fn event(
        &mut self,
        key: &str,
        change: ChangeType,
        selected: bool,
    ) -> Option<ChangeType> {
        let held = if change == ChangeType::Deleted {
            self.held.remove(key)
        } else if selected || self.resumed {
            self.held.insert(key.to_owned(), selected)
        } else {
            self.held.remove(key)
        };
        let unknown = held.is_none() && self.resumed;
        match (change, selected, held) {
            (ChangeType::Deleted, _, held) => {
                (held == Some(true) || unknown).then_some(ChangeType::Deleted)
            }
            (_, true, Some(true)) => Some(ChangeType::Modified),
            (_, true, _) if unknown => Some(change),
            (_, true, _) => Some(ChangeType::Added),
            (_, false, held) => (held == Some(true) || unknown).then_some(ChangeType::Deleted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChangeType::{Added, Deleted, Modified};

    #[test]
    fn objects_entering_and_leaving_a_selection_are_added_and_deleted() {
        let mut s = Selection::new(false);
        assert_eq!(s.event("a", Added, true), Some(Added));
        assert_eq!(s.event("b", Added, false), None);
        assert_eq!(s.event("a", Modified, true), Some(Modified));
        assert_eq!(s.event("a", Modified, false), Some(Deleted), "a left");
        assert_eq!(s.event("a", Modified, false), None, "not held");
        assert_eq!(s.event("b", Modified, true), Some(Added), "b entered");
        assert_eq!(s.event("b", Deleted, true), Some(Deleted));
        assert_eq!(s.event("a", Deleted, false), None, "never held");
        assert!(
            s.held.is_empty(),
            "nothing kept of objects the client lacks"
        );
    }

    #[test]
    fn a_resumed_watch_sends_what_it_cannot_place_once() {
        let mut s = Selection::new(true);
        assert_eq!(s.event("a", Modified, true), Some(Modified));
        assert_eq!(s.event("b", Modified, false), Some(Deleted), "maybe held");
        assert_eq!(s.event("b", Modified, false), None);
        assert_eq!(s.event("b", Modified, true), Some(Added));
        assert_eq!(s.event("c", Deleted, false), Some(Deleted), "maybe held");
    }
}
