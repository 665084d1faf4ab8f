//! DeviceTwin: the devices of this node and their twins (desired and
//! reported property values), kept in LMDB, spoken to over KubeEdge's MQTT
//! topics and reported upstream.
//!
//! Sans-IO: inputs are Device objects from the cloud
//! ([`DeviceTwin::handle_device_object`], [`DeviceTwin::handle_device_deleted`])
//! and MQTT messages on the edge's topics ([`DeviceTwin::handle_mqtt`]);
//! outputs are MQTT messages to publish ([`DeviceTwin::poll_publish`]) and
//! upstream messages ([`DeviceTwin::poll_upstream`]: group "twin", resource
//! "{namespace}/devicestatus/{device}"). Time is Unix milliseconds passed in.
//! Every change is committed to LMDB before anything about it is output; a
//! malformed payload or an unknown device gets an error on the result topic
//! and changes nothing. The device id on MQTT topics is the device's name.

mod mqtt;
mod payload;
mod store;

use std::collections::{BTreeMap, VecDeque};

use heed::Env;

use self::payload::{
    DeviceObject, MemberDevice, MembershipUpdate, TwinDelta, TwinDoc, TwinDocument,
    ValueMetadata as Vm,
};
pub use self::payload::{MsgTwin, TwinValue, TwinVersion, TypeMetadata, ValueMetadata};
pub use self::store::Device;
use self::store::Store;

/// Why DeviceTwin could not take an input.
#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    #[error("LMDB: {0}")]
    Storage(#[from] heed::Error),
    #[error("stored record of device {0} is unreadable: {1}")]
    Corrupt(String, String),
    #[error("Device object refused: {0}")]
    BadObject(String),
}

/// The edge's device twins. See the module documentation.
#[derive(Debug)]
pub struct DeviceTwin {
    store: Store,
    node: String,
    devices: BTreeMap<String, Device>,
    publish: VecDeque<(String, Vec<u8>)>,
    upstream: VecDeque<schema::Message>,
    next_event: u64,
}

impl DeviceTwin {
    /// Opens (creating if needed) DeviceTwin's databases `twin_devices` and
    /// `twin_twins` in `env` and loads the devices; `node` is this edge's
    /// node id. The environment's `max_dbs` must leave room for these two
    /// named databases besides its other users'. Each change is one write
    /// transaction, committed before anything about it is output.
    pub fn open(env: &Env, node: &str) -> Result<Self, TwinError> {
        let store = Store::open(env)?;
        let devices = store.load_all()?;
        Ok(DeviceTwin {
            store,
            node: node.to_owned(),
            devices,
            publish: VecDeque::new(),
            upstream: VecDeque::new(),
            next_event: 0,
        })
    }

    /// The device `id`, as stored.
    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices.get(id)
    }

    /// Ids of the devices known to the edge.
    pub fn device_ids(&self) -> impl Iterator<Item = &str> {
        self.devices.keys().map(String::as_str)
    }

    /// An MQTT message to publish (topic, payload).
    pub fn poll_publish(&mut self) -> Option<(String, Vec<u8>)> {
        self.publish.pop_front()
    }

    /// A message for the cloud.
    pub fn poll_upstream(&mut self) -> Option<schema::Message> {
        self.upstream.pop_front()
    }

    /// A Device object (KubeEdge devices.kubeedge.io/v1beta1 JSON) inserted
    /// or updated in the cloud: its desired values become the twins'
    /// `expected`; properties it no longer has lose their twin.
    pub fn handle_device_object(&mut self, json: &[u8], now_ms: u64) -> Result<(), TwinError> {
        let obj: DeviceObject =
            serde_json::from_slice(json).map_err(|e| TwinError::BadObject(e.to_string()))?;
        let id = obj.metadata.name.clone();
        if !payload::valid_key(&id) {
            return Err(TwinError::BadObject(format!("device name {id:?}")));
        }
        let mut desired: BTreeMap<String, Option<String>> = BTreeMap::new();
        for t in &obj.status.twins {
            desired.insert(
                t.property_name.clone(),
                t.desired.as_ref().and_then(|d| d.as_string()),
            );
        }
        for p in &obj.spec.properties {
            let v = p.desired.as_ref().and_then(|d| d.as_string());
            let e = desired.entry(p.name.clone()).or_default();
            if v.is_some() {
                *e = v;
            }
        }
        let is_new = !self.devices.contains_key(&id);
        let old = self.devices.get(&id).cloned().unwrap_or_default();
        let mut dev = old.clone();
        dev.namespace = obj
            .metadata
            .namespace
            .unwrap_or_else(|| "default".to_owned());
        dev.name = id.clone();
        dev.twins.retain(|k, _| desired.contains_key(k));
        let ts = now_ms as i64;
        for (name, value) in desired {
            let t = dev.twins.entry(name).or_default();
            if t.expected_value() != value.as_deref() {
                t.expected = value.map(|v| TwinValue {
                    value: Some(v),
                    metadata: Some(Vm { timestamp: ts }),
                });
                t.expected_version
                    .get_or_insert_with(TwinVersion::default)
                    .cloud += 1;
            }
        }
        if dev == old && !is_new {
            return Ok(());
        }
        self.store.put(&id, &dev)?;
        let event = self.event_id();
        self.emit_document(&id, &old.twins, &dev, &event, ts);
        self.emit_delta(&id, &dev, &event, ts);
        if is_new {
            let member = MemberDevice {
                id: &id,
                name: &dev.name,
                state: &dev.state,
                twin: &dev.twins,
            };
            let update = MembershipUpdate {
                event_id: &event,
                timestamp: ts,
                added_devices: vec![member],
                removed_devices: vec![],
            };
            self.push_json(
                format!("$hw/events/node/{}/membership/updated", self.node),
                &update,
            );
        }
        self.devices.insert(id, dev);
        Ok(())
    }

    /// The Device `namespace/name` was deleted in the cloud.
    pub fn handle_device_deleted(
        &mut self,
        namespace: &str,
        name: &str,
        now_ms: u64,
    ) -> Result<(), TwinError> {
        match self.devices.get(name) {
            Some(d) if d.namespace == namespace => {}
            _ => return Ok(()),
        }
        self.store.delete(name)?;
        let Some(dev) = self.devices.remove(name) else {
            return Ok(());
        };
        let event = self.event_id();
        let member = MemberDevice {
            id: name,
            name: &dev.name,
            state: &dev.state,
            twin: &dev.twins,
        };
        let update = MembershipUpdate {
            event_id: &event,
            timestamp: now_ms as i64,
            added_devices: vec![],
            removed_devices: vec![member],
        };
        self.push_json(
            format!("$hw/events/node/{}/membership/updated", self.node),
            &update,
        );
        Ok(())
    }

    fn event_id(&mut self) -> String {
        self.next_event += 1;
        format!("{}-twin-{}", self.node, self.next_event)
    }

    fn push_json(&mut self, topic: String, value: &impl serde::Serialize) {
        if let Ok(bytes) = serde_json::to_vec(value) {
            self.publish.push_back((topic, bytes));
        }
    }

    /// `…/twin/update/document` with the twins that changed.
    fn emit_document(
        &mut self,
        id: &str,
        old: &BTreeMap<String, MsgTwin>,
        dev: &Device,
        event: &str,
        ts: i64,
    ) {
        let mut twin = BTreeMap::new();
        for name in old.keys().chain(dev.twins.keys()) {
            let (last, current) = (old.get(name), dev.twins.get(name));
            if last != current {
                twin.insert(name.as_str(), TwinDoc { last, current });
            }
        }
        if twin.is_empty() {
            return;
        }
        let doc = TwinDocument {
            event_id: event,
            timestamp: ts,
            twin,
        };
        self.push_json(format!("$hw/events/device/{id}/twin/update/document"), &doc);
    }

    /// `…/twin/update/delta` when a desired value is not the reported one.
    fn emit_delta(&mut self, id: &str, dev: &Device, event: &str, ts: i64) {
        let delta: BTreeMap<&str, &str> = dev
            .twins
            .iter()
            .filter_map(|(k, t)| {
                let e = t.expected_value()?;
                (t.actual_value() != Some(e)).then_some((k.as_str(), e))
            })
            .collect();
        if delta.is_empty() {
            return;
        }
        let d = TwinDelta {
            event_id: event,
            timestamp: ts,
            twin: &dev.twins,
            delta,
        };
        self.push_json(format!("$hw/events/device/{id}/twin/update/delta"), &d);
    }
}
