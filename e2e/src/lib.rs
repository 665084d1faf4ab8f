//! Apiary's end-to-end tests, in `tests/`: `cloudcontrol`, `cloudhub` and
//! `edgecore` started as real processes from the workspace's build, joined
//! with real tokens and certificates, faulted (kill -9, wiped stores,
//! dropped links) and checked through what a user looks at: the
//! MetaServer's HTTP API, MQTT, `cloudcontrol get`, the README's commands.
//!
//! The tests run the binaries `cargo test --workspace` builds beside them;
//! after `cargo build --workspace`, `cargo test -p e2e` runs them alone.
//! The crate has no code of its own and depends on none of the daemons'.
