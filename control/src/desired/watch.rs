//! The desired state from a Kubernetes API server, kept current by
//! kube-rs watch streams: one [`watcher`] per kind (edge Nodes by label;
//! every Pod, ConfigMap, Secret, Device and DeviceModel — the plan picks
//! what each node needs).
//!
//! [`KubeDesired`] is the sans-IO part: it takes watch events
//! ([`KubeDesired::handle_event`]) and keeps one [`Desired`], with a
//! tombstone for every object deleted (the version it was deleted at, or
//! its last version when a re-list found it gone). Events buffered between
//! `Init` and `InitDone` replace that kind's objects at once, so a re-list
//! after the watch fell behind (HTTP 410) neither flickers objects away nor
//! misses the ones deleted meanwhile. [`watch_desired`] is the glue: it
//! merges the streams (with kube-rs's default backoff on errors) and
//! publishes a snapshot once every kind has been listed, then after each
//! burst of events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event, watcher};
use ::kube::{Api, Client, Resource};
use futures::{FutureExt, StreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use schema::kinds::{self as kind, CLUSTER_NAMESPACE};
use schema::records::ObjectKey;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::core::plan::{Desired, DesiredObject, EDGE_LABEL};
use crate::crd::{Device, DeviceModel};
use crate::desired::latest::Publisher;

/// One object as the plan wants it.
pub type Entry = (ObjectKey, DesiredObject);

/// The desired state kept from watch events. See the module doc.
#[derive(Debug, Default)]
pub struct KubeDesired {
    desired: Desired,
    /// Kinds listed at least once.
    listed: BTreeSet<&'static str>,
    /// Objects of a kind being (re-)listed, until its `InitDone`.
    relisting: BTreeMap<&'static str, BTreeMap<ObjectKey, DesiredObject>>,
}

impl KubeDesired {
    /// Applies one event for `kind`; true when the desired state changed.
    pub fn handle_event(&mut self, kind: &'static str, event: Event<Entry>) -> bool {
        match event {
            Event::Apply((key, obj)) => self.upsert(key, obj),
            Event::Delete((key, obj)) => self.remove(&key, obj.rv),
            Event::Init => {
                self.relisting.insert(kind, BTreeMap::new());
                false
            }
            Event::InitApply((key, obj)) => {
                self.relisting.entry(kind).or_default().insert(key, obj);
                false
            }
            Event::InitDone => {
                let listed = self.relisting.remove(kind).unwrap_or_default();
                let gone: Vec<(ObjectKey, u64)> = self
                    .desired
                    .objects
                    .iter()
                    .filter(|(k, _)| k.kind == kind && !listed.contains_key(*k))
                    .map(|(k, o)| (k.clone(), o.rv))
                    .collect();
                let mut changed = self.listed.insert(kind);
                for (key, rv) in gone {
                    changed |= self.remove(&key, rv);
                }
                for (key, obj) in listed {
                    changed |= self.upsert(key, obj);
                }
                changed
            }
        }
    }

    /// True once every served kind ([`kind::SERVED`]) has been listed.
    pub fn is_listed(&self) -> bool {
        kind::SERVED.iter().all(|k| self.listed.contains(k.kind))
    }

    /// The current desired state.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    fn upsert(&mut self, key: ObjectKey, obj: DesiredObject) -> bool {
        if self
            .desired
            .objects
            .get(&key)
            .is_some_and(|o| o.rv == obj.rv)
        {
            return false;
        }
        self.desired.tombstones.remove(&key);
        self.desired.objects.insert(key, Arc::new(obj));
        true
    }

    fn remove(&mut self, key: &ObjectKey, rv: u64) -> bool {
        let Some(old) = self.desired.objects.remove(key) else {
            return false;
        };
        self.desired.tombstones.insert(key.clone(), rv.max(old.rv));
        true
    }
}

/// An API object as a desired-state entry: its key, its resourceVersion as
/// a number, and its JSON with `apiVersion` and `kind` set. `None` (logged)
/// for an object without a name or with a resourceVersion that is not a
/// number.
pub fn entry<K>(kind: &str, item: &K) -> Option<Entry>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let meta = item.meta();
    let name = meta.name.clone()?;
    let rv = meta.resource_version.as_deref()?;
    let Ok(rv) = rv.parse::<u64>() else {
        tracing::warn!(kind, name, rv, "resourceVersion is not a number: skipped");
        return None;
    };
    let namespace = meta
        .namespace
        .clone()
        .unwrap_or_else(|| CLUSTER_NAMESPACE.to_owned());
    let mut value = serde_json::to_value(item).unwrap_or(Value::Null);
    if let Some(obj) = value.as_object_mut() {
        obj.insert("apiVersion".into(), K::api_version(&()).into());
        obj.insert("kind".into(), K::kind(&()).into());
    }
    let content: Arc<[u8]> = serde_json::to_vec(&value).unwrap_or_default().into();
    let key = ObjectKey::new(kind, &namespace, &name);
    if let Err(e) = key.validate() {
        tracing::warn!(kind, name, "{e}: skipped");
        return None;
    }
    Some((key, DesiredObject { rv, value, content }))
}

/// An event of one kind; `None` for an object that could not be read.
type KindEvent = (&'static str, Result<Option<Event<Entry>>, watcher::Error>);

fn stream_of<K>(
    api: Api<K>,
    kind: &'static str,
    config: watcher::Config,
) -> BoxStream<'static, KindEvent>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    K: Send + Sync + 'static,
{
    watcher(api, config)
        .default_backoff()
        .map(move |r| {
            let r = r.map(|event| match event {
                Event::Apply(o) => entry(kind, &o).map(Event::Apply),
                Event::Delete(o) => entry(kind, &o).map(Event::Delete),
                Event::InitApply(o) => entry(kind, &o).map(Event::InitApply),
                Event::Init => Some(Event::Init),
                Event::InitDone => Some(Event::InitDone),
            });
            (kind, r)
        })
        .boxed()
}

/// Events applied before a snapshot is published and other tasks get a turn.
const BURST: usize = 4096;

/// Watches every kind and publishes the desired state into `tx`: first
/// once all kinds are listed, then after each burst of events. Returns when
/// the loop's end is gone.
pub async fn watch_desired(client: Client, tx: Publisher) {
    let all = watcher::Config::default;
    let streams = vec![
        stream_of(
            Api::<Node>::all(client.clone()),
            kind::NODE,
            all().labels(EDGE_LABEL),
        ),
        stream_of(Api::<Pod>::all(client.clone()), kind::POD, all()),
        stream_of(
            Api::<ConfigMap>::all(client.clone()),
            kind::CONFIGMAP,
            all(),
        ),
        stream_of(Api::<Secret>::all(client.clone()), kind::SECRET, all()),
        stream_of(Api::<Device>::all(client.clone()), kind::DEVICE, all()),
        stream_of(Api::<DeviceModel>::all(client), kind::DEVICEMODEL, all()),
    ];
    let mut events = futures::stream::select_all(streams);
    let mut state = KubeDesired::default();
    while let Some(first) = events.next().await {
        let mut changed = apply(&mut state, first);
        // The rest of the burst (up to BURST events) before one snapshot.
        for _ in 1..BURST {
            let Some(Some(more)) = events.next().now_or_never() else {
                break;
            };
            changed |= apply(&mut state, more);
        }
        if changed && state.is_listed() && !tx.publish(state.desired().clone()) {
            return;
        }
        tokio::task::yield_now().await;
    }
}

fn apply(state: &mut KubeDesired, (kind, event): KindEvent) -> bool {
    match event {
        Ok(Some(e)) => state.handle_event(kind, e),
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(kind, "Kubernetes watch: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: &str, name: &str, rv: u64) -> Entry {
        let value = serde_json::json!({"metadata": {"name": name}});
        let content: Arc<[u8]> = serde_json::to_vec(&value).unwrap().into();
        (
            ObjectKey::new(kind, "default", name),
            DesiredObject { rv, value, content },
        )
    }

    fn listed(state: &mut KubeDesired, kind: &'static str, items: Vec<Entry>) -> bool {
        let mut changed = state.handle_event(kind, Event::Init);
        for e in items {
            changed |= state.handle_event(kind, Event::InitApply(e));
        }
        changed | state.handle_event(kind, Event::InitDone)
    }

    #[test]
    fn the_state_is_published_only_once_every_kind_is_listed() {
        let mut s = KubeDesired::default();
        let served = kind::SERVED.iter().map(|k| k.kind);
        for kind in served.filter(|k| *k != kind::DEVICEMODEL) {
            assert!(!s.is_listed());
            listed(&mut s, kind, vec![]);
        }
        assert!(!s.is_listed());
        assert!(
            listed(&mut s, kind::DEVICEMODEL, vec![]),
            "first list changes"
        );
        assert!(s.is_listed());
    }

    #[test]
    fn a_relist_replaces_a_kind_at_once_and_leaves_the_others() {
        let mut s = KubeDesired::default();
        listed(
            &mut s,
            kind::POD,
            vec![obj("pod", "a", 1), obj("pod", "b", 2)],
        );
        listed(&mut s, kind::SECRET, vec![obj("secret", "s", 3)]);
        // While the re-list runs, the old objects stay.
        assert!(!s.handle_event(kind::POD, Event::Init));
        assert!(!s.handle_event(kind::POD, Event::InitApply(obj("pod", "b", 5))));
        assert_eq!(s.desired().objects.len(), 3);
        assert!(s.handle_event(kind::POD, Event::InitDone));
        let d = s.desired();
        let rvs: Vec<(String, u64)> = d
            .objects
            .iter()
            .map(|(k, o)| (k.name.clone(), o.rv))
            .collect();
        assert_eq!(rvs, [("b".to_owned(), 5), ("s".to_owned(), 3)]);
        assert_eq!(d.tombstones[&ObjectKey::new("pod", "default", "a")], 1);
        // The same list again changes nothing.
        assert!(!listed(&mut s, kind::POD, vec![obj("pod", "b", 5)]));
    }

    #[test]
    fn events_apply_newer_versions_and_record_deletes() {
        let mut s = KubeDesired::default();
        assert!(s.handle_event(kind::POD, Event::Apply(obj("pod", "a", 1))));
        assert!(
            !s.handle_event(kind::POD, Event::Apply(obj("pod", "a", 1))),
            "same version"
        );
        assert!(s.handle_event(kind::POD, Event::Delete(obj("pod", "a", 4))));
        assert_eq!(
            s.desired().tombstones[&ObjectKey::new("pod", "default", "a")],
            4
        );
        assert!(
            !s.handle_event(kind::POD, Event::Delete(obj("pod", "x", 9))),
            "unknown"
        );
        assert!(s.handle_event(kind::POD, Event::Apply(obj("pod", "a", 6))));
        assert!(s.desired().tombstones.is_empty(), "re-created");
    }
}
