//! Client of an external MQTT broker (placeholder).
