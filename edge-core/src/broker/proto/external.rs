//! The alternative to the embedded broker: a small MQTT 3.1.1 client of an
//! external broker (mosquitto, KubeEdge's usual setup) that subscribes to the
//! edge's topics and publishes DeviceTwin's answers. Sans-IO [`Client`] on the
//! broker's codec; the glue's `run` drives it on monoio with reconnects.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use mqtt_proto::{Pid, QoS, QosPid, TopicFilter, TopicName, v3};
use serde::Deserialize;

use super::codec::Framer;
use super::{FrameError, KUBEEDGE_TOPICS, LocalMessage, PublishError};

/// Settings of the external-broker mode (`eventBus.mqttServerExternal`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct ExternalConfig {
    /// Broker address. Default `127.0.0.1:1883`.
    pub address: String,
    /// Client id; the session is kept (clean session off). Default
    /// `apiary-edgecore`.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Seconds. Default 30.
    pub keep_alive_s: u16,
    /// Topics subscribed at QoS 1. Default [`KUBEEDGE_TOPICS`].
    pub topics: Vec<String>,
    /// Delay before reconnecting. Default 1 s.
    pub reconnect_ms: u64,
    /// Publishes held while disconnected; the oldest goes first. Default 1000.
    pub max_pending: usize,
    /// Largest packet accepted from the broker. Default 256 KiB.
    pub max_packet_size: usize,
}

impl Default for ExternalConfig {
    fn default() -> Self {
        ExternalConfig {
            address: "127.0.0.1:1883".to_owned(),
            client_id: "apiary-edgecore".to_owned(),
            username: None,
            password: None,
            keep_alive_s: 30,
            topics: KUBEEDGE_TOPICS.iter().map(|s| (*s).to_owned()).collect(),
            reconnect_ms: 1000,
            max_pending: 1000,
            max_packet_size: 256 * 1024,
        }
    }
}

/// Why the connection to the external broker is given up (then retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("bytes from the broker refused: {0}")]
    Frame(#[from] FrameError),
    #[error("broker refused the connection (CONNACK code {0})")]
    Refused(u8),
    #[error("broker silent for 1.5× keepalive")]
    Timeout,
}

const MAX_INFLIGHT: usize = 32;

/// A QoS 1 publish not acknowledged yet, or a publish waiting for the link.
#[derive(Debug, Clone)]
struct Out {
    topic: TopicName,
    payload: Bytes,
    qos: QoS,
}

/// Sans-IO client. Call order: [`Client::handle_link_up`] once TCP is
/// connected, [`Client::handle_bytes`] with what is read, write
/// [`Client::poll_transmit`], [`Client::handle_timeout`] at
/// [`Client::poll_timeout`], [`Client::handle_link_down`] when the socket is
/// gone (an `Err` from any input means: close it).
#[derive(Debug)]
pub struct Client {
    cfg: ExternalConfig,
    framer: Framer,
    link_up: bool,
    connected: bool,
    subscribed: bool,
    out: Vec<u8>,
    next_pid: u16,
    inflight: BTreeMap<u16, Out>,
    pending: VecDeque<Out>,
    local: VecDeque<LocalMessage>,
    last_tx_ms: u64,
    last_rx_ms: u64,
}

impl Client {
    pub fn new(cfg: ExternalConfig) -> Self {
        Client {
            framer: Framer::new(cfg.max_packet_size),
            cfg,
            link_up: false,
            connected: false,
            subscribed: false,
            out: Vec::new(),
            next_pid: 1,
            inflight: BTreeMap::new(),
            pending: VecDeque::new(),
            local: VecDeque::new(),
            last_tx_ms: 0,
            last_rx_ms: 0,
        }
    }

    pub fn config(&self) -> &ExternalConfig {
        &self.cfg
    }

    /// Connected and the SUBACK of the edge's topics received.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed
    }

    pub fn handle_link_up(&mut self, now_ms: u64) {
        self.framer = Framer::new(self.cfg.max_packet_size);
        self.link_up = true;
        self.out.clear();
        self.last_rx_ms = now_ms;
        let mut c = v3::Connect::new(self.cfg.client_id.as_str().into(), self.cfg.keep_alive_s);
        c.clean_session = false;
        c.username = self.cfg.username.as_deref().map(Into::into);
        c.password = self
            .cfg
            .password
            .as_ref()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()));
        self.send(v3::Packet::Connect(c), now_ms);
    }

    pub fn handle_link_down(&mut self) {
        self.link_up = false;
        self.connected = false;
        self.subscribed = false;
        self.out.clear();
    }

    pub fn handle_bytes(&mut self, bytes: &[u8], now_ms: u64) -> Result<(), ClientError> {
        self.last_rx_ms = now_ms;
        self.framer.push(bytes);
        loop {
            let pkt = match self.framer.next_packet(false)? {
                Some(p) => v3::Packet::decode(p)
                    .ok()
                    .flatten()
                    .ok_or(FrameError::Malformed)?,
                None => return Ok(()),
            };
            self.on_packet(pkt, now_ms)?;
        }
    }

    fn on_packet(&mut self, pkt: v3::Packet, now_ms: u64) -> Result<(), ClientError> {
        match pkt {
            v3::Packet::Connack(a) if a.code != v3::ConnectReturnCode::Accepted => {
                return Err(ClientError::Refused(a.code as u8));
            }
            v3::Packet::Connack(_) => {
                self.connected = true;
                let topics: Vec<(TopicFilter, QoS)> = self
                    .cfg
                    .topics
                    .iter()
                    .filter_map(|t| Some((TopicFilter::try_from(t.as_str()).ok()?, QoS::Level1)))
                    .collect();
                let pid = self.alloc_pid();
                self.send(
                    v3::Packet::Subscribe(v3::Subscribe::new(pid, topics)),
                    now_ms,
                );
                let resend: Vec<(u16, Out)> =
                    self.inflight.iter().map(|(p, o)| (*p, o.clone())).collect();
                for (p, o) in resend {
                    let mut publish =
                        v3::Publish::new(QosPid::Level1(pid_of(p)), o.topic, o.payload);
                    publish.dup = true;
                    self.send(v3::Packet::Publish(publish), now_ms);
                }
                self.flush(now_ms);
            }
            v3::Packet::Suback(_) => self.subscribed = true,
            v3::Packet::Publish(p) => {
                if let QosPid::Level1(pid) | QosPid::Level2(pid) = p.qos_pid {
                    let ack = if p.qos_pid.qos() == QoS::Level1 {
                        v3::Packet::Puback(pid)
                    } else {
                        v3::Packet::Pubrec(pid)
                    };
                    self.send(ack, now_ms);
                }
                if self.local.len() >= self.cfg.max_pending {
                    self.local.pop_front();
                }
                self.local.push_back(LocalMessage {
                    topic: p.topic_name.to_string(),
                    payload: p.payload,
                });
            }
            v3::Packet::Pubrel(pid) => self.send(v3::Packet::Pubcomp(pid), now_ms),
            v3::Packet::Puback(pid) => {
                self.inflight.remove(&pid.value());
                self.flush(now_ms);
            }
            _ => {}
        }
        Ok(())
    }

    /// Publishes now if connected, else when connected (bounded, oldest
    /// dropped first).
    pub fn publish(
        &mut self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: u8,
        now_ms: u64,
    ) -> Result<(), PublishError> {
        let qos = match qos {
            0 => QoS::Level0,
            1 => QoS::Level1,
            q => return Err(PublishError::Qos(q)),
        };
        let topic = match TopicName::try_from(topic) {
            Ok(t) if !t.is_empty() => t,
            _ => return Err(PublishError::Topic(topic.to_owned())),
        };
        if self.pending.len() >= self.cfg.max_pending {
            self.pending.pop_front();
        }
        self.pending.push_back(Out {
            topic,
            payload: payload.into(),
            qos,
        });
        self.flush(now_ms);
        Ok(())
    }

    fn flush(&mut self, now_ms: u64) {
        while self.connected && self.inflight.len() < MAX_INFLIGHT {
            let Some(o) = self.pending.pop_front() else {
                break;
            };
            let qos_pid = if o.qos == QoS::Level1 {
                let pid = self.alloc_pid();
                self.inflight.insert(pid.value(), o.clone());
                QosPid::Level1(pid)
            } else {
                QosPid::Level0
            };
            self.send(
                v3::Packet::Publish(v3::Publish::new(qos_pid, o.topic, o.payload)),
                now_ms,
            );
        }
    }

    fn alloc_pid(&mut self) -> Pid {
        loop {
            let p = self.next_pid;
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&p) {
                return pid_of(p);
            }
        }
    }

    fn send(&mut self, p: v3::Packet, now_ms: u64) {
        if let Ok(b) = p.encode() {
            self.out.extend_from_slice(b.as_ref());
            self.last_tx_ms = now_ms;
        }
    }

    pub fn handle_timeout(&mut self, now_ms: u64) -> Result<(), ClientError> {
        let ka = u64::from(self.cfg.keep_alive_s) * 1000;
        if !self.link_up || ka == 0 {
            return Ok(());
        }
        if now_ms >= self.last_rx_ms + ka * 3 / 2 {
            return Err(ClientError::Timeout);
        }
        if now_ms >= self.last_tx_ms + ka {
            self.send(v3::Packet::Pingreq, now_ms);
        }
        Ok(())
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        let ka = u64::from(self.cfg.keep_alive_s) * 1000;
        (self.link_up && ka > 0).then(|| (self.last_tx_ms + ka).min(self.last_rx_ms + ka * 3 / 2))
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out))
    }

    /// A message received on one of the subscribed topics.
    pub fn poll_local(&mut self) -> Option<LocalMessage> {
        self.local.pop_front()
    }
}

fn pid_of(n: u16) -> Pid {
    Pid::try_from(n).unwrap_or_default()
}
