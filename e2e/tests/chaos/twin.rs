//! A device driver's twin report over MQTT, as KubeEdge's mappers send it:
//! a QoS 1 publish of the reported value on
//! `$hw/events/device/{id}/twin/update`, which the edge's broker
//! acknowledges (PUBACK) and DeviceTwin answers on `…/twin/update/result`.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// How a report went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// PUBACK received and DeviceTwin took the value.
    Accepted,
    /// Acknowledged, but DeviceTwin answered with an error (e.g. the edge
    /// does not hold the Device).
    Refused(String),
    /// No connection, no acknowledgement or no answer in time.
    Failed(String),
}

/// Publishes `value` as the reported temperature of `device` on the broker
/// at `mqtt`.
pub(crate) fn report(
    runtime: &tokio::runtime::Runtime,
    mqtt: SocketAddr,
    client_id: &str,
    device: &str,
    value: u64,
) -> Outcome {
    runtime.block_on(async {
        let mut options = MqttOptions::new(client_id, mqtt.ip().to_string(), mqtt.port());
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(options, 10);
        let result_topic = format!("$hw/events/device/{device}/twin/update/result");
        if let Err(e) = client.subscribe(&result_topic, QoS::AtLeastOnce).await {
            return Outcome::Failed(e.to_string());
        }
        let payload = format!(
            r#"{{"event_id":"report-{value}","timestamp":0,"twin":{{"temperature":{{"actual":{{"value":"{value}"}},"metadata":{{"type":"Updated"}}}}}}}}"#
        );
        let (mut published, mut acked, mut answer) = (false, false, None);
        let outcome = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) if !published => {
                        published = true;
                        let topic = format!("$hw/events/device/{device}/twin/update");
                        if let Err(e) = client
                            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
                            .await
                        {
                            return Outcome::Failed(e.to_string());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => acked = true,
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == result_topic => {
                        let v: serde_json::Value =
                            serde_json::from_slice(&p.payload).unwrap_or_default();
                        answer = Some(v);
                    }
                    Ok(_) => {}
                    Err(e) => return Outcome::Failed(e.to_string()),
                }
                if let (true, Some(v)) = (acked, &answer) {
                    return match v.get("code") {
                        None | Some(serde_json::Value::Null) => Outcome::Accepted,
                        Some(code) => Outcome::Refused(format!("{code} {}", v["reason"])),
                    };
                }
            }
        })
        .await;
        outcome.unwrap_or_else(|_| Outcome::Failed("no PUBACK and answer in 5 s".into()))
    })
}
