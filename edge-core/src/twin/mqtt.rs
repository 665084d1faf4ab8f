//! DeviceTwin's answers to the MQTT topics of KubeEdge's EventBus.

use std::collections::BTreeMap;

use super::payload::{
    self, GetRequest, MemberDevice, MembershipDetail, MsgTwin, StateUpdate, TwinResult, TwinUpdate,
    TwinValue, TwinVersion, ValueMetadata,
};
use super::{DeviceTwin, TwinError};

/// KubeEdge's result codes.
const BAD_REQUEST: u16 = 400;
const NOT_FOUND: u16 = 404;
/// Twins one device may have; devices add twins by updating new names.
const MAX_TWINS: usize = 256;

impl DeviceTwin {
    /// A message on one of the edge's topics ([`crate::broker::KUBEEDGE_TOPICS`]).
    /// `Err` only when LMDB fails; bad payloads are answered on MQTT.
    pub fn handle_mqtt(
        &mut self,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<(), TwinError> {
        if let Some(rest) = topic.strip_prefix("$hw/events/device/") {
            let Some((id, what)) = rest.split_once('/') else {
                return Ok(());
            };
            match what {
                "twin/update" => self.twin_update(id, payload, now_ms)?,
                "twin/get" => self.twin_get(id, payload, now_ms),
                "state/update" => self.state_update(id, payload, now_ms)?,
                _ => {}
            }
        } else if let Some(rest) = topic.strip_prefix("$hw/events/node/") {
            if rest.strip_suffix("/membership/get").is_some() {
                self.membership_get(payload, now_ms);
            }
        } else if topic.starts_with("$hw/events/upload/") {
            self.upload(topic, payload, now_ms);
        }
        Ok(())
    }

    fn error(&mut self, topic: String, event_id: &str, code: u16, reason: &str, now_ms: u64) {
        let r = TwinResult {
            event_id,
            timestamp: now_ms as i64,
            twin: None,
            code: Some(code),
            reason: Some(reason),
        };
        self.push_json(topic, &r);
    }

    fn twin_update(&mut self, id: &str, body: &[u8], now_ms: u64) -> Result<(), TwinError> {
        let result_topic = format!("$hw/events/device/{id}/twin/update/result");
        let update: TwinUpdate = match serde_json::from_slice(body) {
            Ok(u) => u,
            Err(e) => {
                let reason = format!("malformed twin update: {e}");
                self.error(result_topic, "", BAD_REQUEST, &reason, now_ms);
                return Ok(());
            }
        };
        let bad = update.twin.iter().find_map(|(k, t)| {
            let values = t
                .iter()
                .flat_map(|t| [t.expected_value(), t.actual_value()])
                .flatten();
            (!payload::valid_key(k))
                .then(|| format!("invalid twin name {k:?}"))
                .or_else(|| {
                    values
                        .clone()
                        .any(|v| !payload::valid_value(v))
                        .then(|| format!("invalid value for twin {k:?}"))
                })
        });
        if let Some(reason) = bad {
            self.error(result_topic, &update.event_id, BAD_REQUEST, &reason, now_ms);
            return Ok(());
        }
        let Some(old) = self.devices.get(id).cloned() else {
            self.error(
                result_topic,
                &update.event_id,
                NOT_FOUND,
                "device not found",
                now_ms,
            );
            return Ok(());
        };
        let ts = now_ms as i64;
        let mut dev = old.clone();
        let mut reported = Vec::new();
        for (name, t) in &update.twin {
            let Some(t) = t else {
                dev.twins.remove(name);
                continue;
            };
            let cur = dev.twins.entry(name.clone()).or_default();
            if let Some(v) = t.expected_value() {
                cur.expected = Some(value(v, ts));
                cur.expected_version
                    .get_or_insert_with(TwinVersion::default)
                    .edge += 1;
            }
            if let Some(v) = t.actual_value() {
                cur.actual = Some(value(v, ts));
                cur.actual_version
                    .get_or_insert_with(TwinVersion::default)
                    .edge += 1;
                reported.push((name.clone(), v.to_owned()));
            }
            if t.metadata.is_some() {
                cur.metadata = t.metadata.clone();
            }
            if t.optional.is_some() {
                cur.optional = t.optional;
            }
        }
        if dev.twins.len() > MAX_TWINS {
            let reason = format!("more than {MAX_TWINS} twins");
            self.error(result_topic, &update.event_id, BAD_REQUEST, &reason, now_ms);
            return Ok(());
        }
        if dev != old {
            self.store.put(id, &dev)?;
        }
        let updated: BTreeMap<String, MsgTwin> = update
            .twin
            .keys()
            .filter_map(|k| Some((k.clone(), dev.twins.get(k)?.clone())))
            .collect();
        let ok = TwinResult {
            event_id: &update.event_id,
            timestamp: ts,
            twin: Some(&updated),
            code: None,
            reason: None,
        };
        self.push_json(result_topic, &ok);
        self.emit_document(id, &old.twins, &dev, &update.event_id, ts);
        self.emit_delta(id, &dev, &update.event_id, ts);
        if !reported.is_empty() {
            self.report(&dev.namespace, id, &reported, now_ms);
        }
        self.devices.insert(id.to_owned(), dev);
        Ok(())
    }

    /// The reported values, upstream (KubeEdge Device `status.twins` shape).
    fn report(&mut self, namespace: &str, id: &str, reported: &[(String, String)], now_ms: u64) {
        let twins: Vec<serde_json::Value> = reported
            .iter()
            .map(|(name, v)| {
                serde_json::json!({
                    "propertyName": name,
                    "reported": { "value": v, "metadata": { "timestamp": now_ms.to_string() } },
                })
            })
            .collect();
        let content =
            serde_json::to_vec(&serde_json::json!({ "twins": twins })).unwrap_or_default();
        let msg = self.message(
            "twin",
            "update",
            format!("{namespace}/devicestatus/{id}"),
            content,
            now_ms,
        );
        self.upstream.push_back(msg);
    }

    fn message(
        &mut self,
        group: &str,
        operation: &str,
        resource: String,
        content: Vec<u8>,
        now_ms: u64,
    ) -> schema::Message {
        let mut m = schema::Message::default();
        m.header.id = self.event_id();
        m.header.timestamp_ms = now_ms;
        m.route.source = "twin".to_owned();
        m.route.group = group.to_owned();
        m.route.operation = operation.to_owned();
        m.route.resource = resource;
        m.content = content;
        m
    }

    fn twin_get(&mut self, id: &str, body: &[u8], now_ms: u64) {
        let topic = format!("$hw/events/device/{id}/twin/get/result");
        let req: GetRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return self.error(
                    topic,
                    "",
                    BAD_REQUEST,
                    &format!("malformed twin get: {e}"),
                    now_ms,
                );
            }
        };
        let Some(dev) = self.devices.get(id) else {
            return self.error(topic, &req.event_id, NOT_FOUND, "device not found", now_ms);
        };
        let r = TwinResult {
            event_id: &req.event_id,
            timestamp: now_ms as i64,
            twin: Some(&dev.twins),
            code: None,
            reason: None,
        };
        if let Ok(bytes) = serde_json::to_vec(&r) {
            self.publish.push_back((topic, bytes));
        }
    }

    fn state_update(&mut self, id: &str, body: &[u8], now_ms: u64) -> Result<(), TwinError> {
        let topic = format!("$hw/events/device/{id}/state/update/result");
        let req: StateUpdate = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                self.error(
                    topic,
                    "",
                    BAD_REQUEST,
                    &format!("malformed state update: {e}"),
                    now_ms,
                );
                return Ok(());
            }
        };
        let Some(mut dev) = self.devices.get(id).cloned() else {
            self.error(topic, &req.event_id, NOT_FOUND, "device not found", now_ms);
            return Ok(());
        };
        if !payload::valid_value(&req.state) {
            self.error(topic, &req.event_id, BAD_REQUEST, "invalid state", now_ms);
            return Ok(());
        }
        dev.state = req.state;
        self.store.put(id, &dev)?;
        let r = TwinResult {
            event_id: &req.event_id,
            timestamp: now_ms as i64,
            twin: None,
            code: None,
            reason: None,
        };
        self.push_json(topic, &r);
        self.devices.insert(id.to_owned(), dev);
        Ok(())
    }

    fn membership_get(&mut self, body: &[u8], now_ms: u64) {
        let topic = format!("$hw/events/node/{}/membership/get/result", self.node);
        let event_id = match serde_json::from_slice::<GetRequest>(body) {
            Ok(r) => r.event_id,
            Err(e) => {
                return self.error(
                    topic,
                    "",
                    BAD_REQUEST,
                    &format!("malformed membership get: {e}"),
                    now_ms,
                );
            }
        };
        let devices = self
            .devices
            .iter()
            .map(|(id, d)| MemberDevice {
                id,
                name: &d.name,
                state: &d.state,
                twin: &d.twins,
            })
            .collect();
        let detail = MembershipDetail {
            event_id: &event_id,
            timestamp: now_ms as i64,
            devices,
        };
        if let Ok(bytes) = serde_json::to_vec(&detail) {
            self.publish.push_back((topic, bytes));
        }
    }

    /// `$hw/events/upload/#`: passed upstream as KubeEdge's EventBus does
    /// (group "user", operation "upload", resource = the topic).
    fn upload(&mut self, topic: &str, body: &[u8], now_ms: u64) {
        let mut m = self.message("user", "upload", topic.to_owned(), body.to_vec(), now_ms);
        m.route.source = "eventbus".to_owned();
        self.upstream.push_back(m);
    }
}

fn value(v: &str, ts: i64) -> TwinValue {
    TwinValue {
        value: Some(v.to_owned()),
        metadata: Some(ValueMetadata { timestamp: ts }),
    }
}
