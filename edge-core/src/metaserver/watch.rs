//! Live watch subscriptions: the daemon publishes every committed change,
//! each open watch receives the ones of its kind and namespace; and the
//! pod statuses Edged reports, which watches carry as `MODIFIED` events of
//! an unchanged resourceVersion (the status is the edge's, not the cloud's).

use futures_channel::mpsc;

use crate::store::Change;

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
