//! DeviceTwin and the EventBus wired into the daemon: device messages from
//! MQTT go to DeviceTwin, whose answers are published back and whose
//! reported values go upstream through the durable outbox; Device objects
//! committed from the cloud update the twins' desired values.

use std::cell::RefCell;
use std::rc::Rc;

use clock::unix_ms;

use crate::broker::EventBus;
use crate::hooks::Upstream;
use crate::store::{Change, ChangeType};
use crate::twin::DeviceTwin;

/// Why the device side could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    #[error("EventBus: {0}")]
    EventBus(std::io::Error),
    #[error("DeviceTwin: {0}")]
    Twin(#[from] crate::twin::TwinError),
}

/// The running device side, shared by the MQTT task and the change hook.
#[derive(Debug)]
pub struct Devices {
    bus: EventBus,
    twin: RefCell<DeviceTwin>,
    upstream: Upstream,
}

impl Devices {
    /// Starts the EventBus on the current runtime, opens DeviceTwin in the
    /// store's environment, and spawns the task that serves device messages.
    pub fn start(
        config: &crate::broker::EventBusConfig,
        env: &heed::Env,
        node: &str,
        upstream: Upstream,
    ) -> Result<Rc<Self>, DevicesError> {
        let bus = EventBus::start(config).map_err(DevicesError::EventBus)?;
        if let Some(addr) = bus.local_addr() {
            tracing::info!(%addr, "MQTT broker listening");
            println!("edgecore mqtt={addr}");
        }
        let twin = DeviceTwin::open(env, node)?;
        let devices = Rc::new(Self {
            bus,
            twin: RefCell::new(twin),
            upstream,
        });
        let task = devices.clone();
        monoio::spawn(async move {
            loop {
                let m = task.bus.next_local().await;
                let result = task
                    .twin
                    .borrow_mut()
                    .handle_mqtt(&m.topic, &m.payload, unix_ms());
                if let Err(e) = result {
                    tracing::error!(topic = m.topic, "DeviceTwin: {e}");
                }
                task.flush();
            }
        });
        Ok(devices)
    }

    /// Device objects a commit changed: their desired values.
    pub fn handle_changes(&self, changes: &[Change]) {
        let now = unix_ms();
        for c in changes.iter().filter(|c| c.object.key.kind == "device") {
            let mut twin = self.twin.borrow_mut();
            let result = match c.change {
                ChangeType::Deleted => {
                    let key = &c.object.key;
                    twin.handle_device_deleted(&key.namespace, &key.name, now)
                }
                ChangeType::Added | ChangeType::Modified => {
                    twin.handle_device_object(&c.object.data, now)
                }
            };
            if let Err(e) = result {
                tracing::warn!(device = c.object.key.name, "Device object: {e}");
            }
        }
        self.flush();
    }

    /// Publishes what DeviceTwin answered and queues its reports upstream.
    fn flush(&self) {
        let mut twin = self.twin.borrow_mut();
        while let Some((topic, payload)) = twin.poll_publish() {
            if let Err(e) = self.bus.publish(&topic, payload, 1) {
                tracing::warn!(topic, "publish: {e}");
            }
        }
        let mut reports = Vec::new();
        while let Some(m) = twin.poll_upstream() {
            reports.push(m);
        }
        if !reports.is_empty() && !self.upstream.send(reports) {
            tracing::warn!("device reports not queued: the daemon is stopping");
        }
    }
}
