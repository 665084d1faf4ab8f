//! The broker's packets to clients, encoded for MQTT 3.1.1 or 5.

use mqtt_proto::{Pid, QoS, QosPid, TopicName, v3, v5};

use super::packet::{ConnackCode, Msg, Outbound, Version};

fn pid(n: u16) -> Pid {
    Pid::try_from(n).unwrap_or_default()
}

fn qos_pid(qos: u8, p: Option<u16>) -> QosPid {
    match (qos, p) {
        (1.., Some(p)) => QosPid::Level1(pid(p)),
        _ => QosPid::Level0,
    }
}

fn topic(m: &Msg) -> TopicName {
    m.topic.clone()
}

/// Appends the encoding of `out` to `buf`.
pub(crate) fn encode(version: Version, out: Outbound<'_>, buf: &mut Vec<u8>) {
    let bytes = match version {
        Version::V3 => encode_v3(out),
        Version::V5 => encode_v5(out),
    };
    if let Some(Ok(b)) = bytes {
        buf.extend_from_slice(b.as_ref());
    }
}

fn encode_v3(out: Outbound<'_>) -> Option<Result<mqtt_proto::VarBytes, mqtt_proto::Error>> {
    let p = match out {
        Outbound::Connack {
            session_present,
            code,
            ..
        } => {
            let code = match code {
                ConnackCode::Accepted => v3::ConnectReturnCode::Accepted,
                ConnackCode::BadClientId => v3::ConnectReturnCode::IdentifierRejected,
                ConnackCode::Unavailable => v3::ConnectReturnCode::ServerUnavailable,
                ConnackCode::BadAuth => v3::ConnectReturnCode::BadUserNameOrPassword,
            };
            v3::Packet::Connack(v3::Connack::new(session_present, code))
        }
        Outbound::Publish { msg, pid, dup } => {
            let mut p = v3::Publish::new(qos_pid(msg.qos, pid), topic(msg), msg.payload.clone());
            p.dup = dup;
            p.retain = msg.retain;
            v3::Packet::Publish(p)
        }
        Outbound::Puback(p) => v3::Packet::Puback(pid(p)),
        Outbound::Pubrec(p) => v3::Packet::Pubrec(pid(p)),
        Outbound::Pubcomp(p) => v3::Packet::Pubcomp(pid(p)),
        Outbound::Suback { pid: p, granted } => {
            let codes = granted
                .into_iter()
                .map(|g| match g {
                    Some(0) => v3::SubscribeReturnCode::MaxLevel0,
                    Some(_) => v3::SubscribeReturnCode::MaxLevel1,
                    None => v3::SubscribeReturnCode::Failure,
                })
                .collect();
            v3::Packet::Suback(v3::Suback::new(pid(p), codes))
        }
        Outbound::Unsuback { pid: p, .. } => v3::Packet::Unsuback(pid(p)),
        Outbound::Pingresp => v3::Packet::Pingresp,
        Outbound::Disconnect(_) => return None,
    };
    Some(p.encode())
}

fn encode_v5(out: Outbound<'_>) -> Option<Result<mqtt_proto::VarBytes, mqtt_proto::Error>> {
    let p = match out {
        Outbound::Connack {
            session_present,
            code,
            assigned_id,
        } => {
            let code = match code {
                ConnackCode::Accepted => v5::ConnectReasonCode::Success,
                ConnackCode::BadClientId => v5::ConnectReasonCode::ClientIdentifierNotValid,
                ConnackCode::Unavailable => v5::ConnectReasonCode::ServerUnavailable,
                ConnackCode::BadAuth => v5::ConnectReasonCode::BadUserNameOrPassword,
            };
            let mut c = v5::Connack::new(session_present, code);
            c.properties.max_qos = Some(QoS::Level1);
            c.properties.assigned_client_id = assigned_id;
            c.properties.shared_subscription_available = Some(false);
            c.properties.subscription_id_available = Some(false);
            v5::Packet::Connack(c)
        }
        Outbound::Publish { msg, pid, dup } => {
            let mut p = v5::Publish::new(qos_pid(msg.qos, pid), topic(msg), msg.payload.clone());
            p.dup = dup;
            p.retain = msg.retain;
            v5::Packet::Publish(p)
        }
        Outbound::Puback(p) => v5::Packet::Puback(v5::Puback::new_success(pid(p))),
        Outbound::Pubrec(p) => v5::Packet::Pubrec(v5::Pubrec::new_success(pid(p))),
        Outbound::Pubcomp(p) => v5::Packet::Pubcomp(v5::Pubcomp::new_success(pid(p))),
        Outbound::Suback { pid: p, granted } => {
            let codes = granted
                .into_iter()
                .map(|g| match g {
                    Some(0) => v5::SubscribeReasonCode::GrantedQoS0,
                    Some(_) => v5::SubscribeReasonCode::GrantedQoS1,
                    None => v5::SubscribeReasonCode::TopicFilterInvalid,
                })
                .collect();
            v5::Packet::Suback(v5::Suback::new(pid(p), codes))
        }
        Outbound::Unsuback { pid: p, count } => v5::Packet::Unsuback(v5::Unsuback::new(
            pid(p),
            vec![v5::UnsubscribeReasonCode::Success; count],
        )),
        Outbound::Pingresp => v5::Packet::Pingresp,
        Outbound::Disconnect(code) => {
            let code = match code {
                0x8d => v5::DisconnectReasonCode::KeepAliveTimeout,
                0x8e => v5::DisconnectReasonCode::SessionTakenOver,
                0x95 => v5::DisconnectReasonCode::PacketTooLarge,
                0x81 => v5::DisconnectReasonCode::MalformedPacket,
                _ => v5::DisconnectReasonCode::UnspecifiedError,
            };
            v5::Packet::Disconnect(v5::Disconnect::new(code))
        }
    };
    Some(p.encode())
}
