//! The process: opens the store, CA, rings and the bootstrap endpoint, then
//! one tokio loop feeds [`Control`] from the manifest directory, the
//! shards' rings and a flush timer, and drains its records into the rings.
//! Blocking threads wait on the rings (futexes) and wake the loop through
//! channels; a full ring is waited on by a blocking task while everything
//! else goes on.

use std::io::Write;
use std::sync::{Arc, RwLock, mpsc as std_mpsc};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::bootstrap::{self, Bootstrap};
use crate::certs::Ca;
use crate::checkpoint::Store;
use crate::client_auth::EdgeCerts;
use crate::config::ControlConfig;
use crate::control::Control;
use crate::manifest::{ManifestDir, Versions};
use crate::rings::Rings;
use crate::status::StatusDir;
use crate::token::Tokens;
use crate::util::unix_ms;

/// Why the process could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RunError(pub String);

fn err(context: &str) -> impl FnOnce(&dyn std::fmt::Display) -> RunError + '_ {
    move |e| RunError(format!("{context}: {e}"))
}

/// Records read from a ring per batch.
const BATCH: usize = 1024;

/// Runs until SIGINT or SIGTERM.
pub async fn run(cfg: ControlConfig) -> Result<(), RunError> {
    let kube = if cfg.kube {
        let client = ::kube::Client::try_default()
            .await
            .map_err(|e| err("Kubernetes client")(&e))?;
        Some(client)
    } else {
        None
    };
    let manifests = match (&cfg.manifests, &kube) {
        (Some(m), None) => Some(m.clone()),
        (_, Some(_)) => None,
        (None, None) => {
            return Err(RunError(
                "no source of desired state: give --manifests DIR, or --kube with a kubeconfig"
                    .into(),
            ));
        }
    };
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| err("data dir")(&e))?;
    let ca = Ca::load_or_create(&cfg.data_dir).map_err(|e| err("CA")(&e))?;
    let (cert, key) = ca
        .ensure_server_cert(&cfg.data_dir, &cfg.advertise_address)
        .map_err(|e| err("server certificate")(&e))?;
    let tokens = Tokens::load(&cfg.data_dir, ca.der()).map_err(|e| err("token key")(&e))?;
    let edge_certs = EdgeCerts::new(ca.der()).map_err(|e| err("TLS")(&e))?;
    let acceptor = bootstrap::acceptor(&cert, &key, &edge_certs).map_err(|e| err("TLS")(&e))?;
    let mut store = Store::open(&cfg.data_dir.join("store")).map_err(|e| err("store")(&e))?;
    if let Some(client) = &kube {
        // The NodeSync copies, for a store that is new or behind.
        match crate::kube::load_checkpoints(client).await {
            Ok(loaded) => {
                for c in &loaded {
                    store
                        .import(&c.node, &c.objects, c.upstream_seq, c.store_id)
                        .map_err(|e| err("store")(&e))?;
                }
                store.flush().map_err(|e| err("store")(&e))?;
                tracing::info!(
                    nodes = loaded.len(),
                    "checkpoints read from NodeSync objects"
                );
            }
            Err(e) => tracing::warn!("NodeSync checkpoints not read ({e}): the local store only"),
        }
    }
    let mut versions = Versions::load(&store).map_err(|e| err("store")(&e))?;
    let status = StatusDir::new(&cfg.status_dir());
    let mut rings =
        Rings::open(&cfg.ring_dir, cfg.shards, cfg.ring_size()).map_err(|e| err("rings")(&e))?;

    let listener = tokio::net::TcpListener::bind(&cfg.cert_address)
        .await
        .map_err(|e| err(&cfg.cert_address)(&e))?;
    let cert_addr = listener.local_addr().map_err(|e| err("bind")(&e))?;
    let boot = Arc::new(Bootstrap {
        ca,
        edge_certs,
        tokens,
        cert_days: cfg.edge_cert_validity_days,
        nodes: RwLock::new(Default::default()),
    });
    tokio::spawn(bootstrap::serve(listener, acceptor, boot.clone()));

    // Kubernetes mode: watch streams keep the desired state; status
    // changes are patched, with retries, by their own task.
    let (kube_tx, mut kube_rx) = tokio::sync::watch::channel(None);
    let mut patches = None;
    if let Some(client) = kube.clone() {
        tokio::spawn(crate::watch::watch_desired(client.clone(), kube_tx));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(crate::patches::write_patches(client, rx));
        patches = Some(tx);
    }

    // The first state, before anything is read from the rings.
    let mut dir = manifests.as_deref().map(ManifestDir::new);
    let desired = match (&mut dir, &kube) {
        (Some(dir), _) => {
            let (objects, problems) = dir.scan();
            for p in &problems {
                tracing::error!("{p}");
            }
            versions
                .apply(&mut store, objects.unwrap_or_default())
                .map_err(|e| err("store")(&e))?
        }
        (None, Some(_)) => {
            tracing::info!("waiting for the first list of every kind from Kubernetes");
            kube_rx
                .wait_for(Option::is_some)
                .await
                .map_err(|_| RunError("Kubernetes watch ended".into()))?
                .clone()
                .unwrap_or_default()
        }
        (None, None) => unreachable!("checked above"),
    };
    let mut control = Control::new(cfg.shards, store, status);
    control.report_status_changes(kube.is_some());
    control
        .handle_desired(desired)
        .map_err(|e| err("store")(&e))?;
    *boot.nodes.write().unwrap_or_else(|p| p.into_inner()) = control.edge_nodes();
    // What nodes have not acknowledged is in the rings before "ready".
    drain(&mut control, &mut rings);

    // One thread per ring waits for records; it waits again once re-armed.
    let (inbound_tx, mut inbound_rx) = mpsc::channel::<usize>(rings.len().max(1));
    let mut arms = Vec::new();
    for shard in 0..rings.len() {
        let (arm_tx, arm_rx) = std_mpsc::channel::<()>();
        let waiter = rings.waiter(shard);
        let tx = inbound_tx.clone();
        std::thread::Builder::new()
            .name(format!("ring-{shard}"))
            .spawn(move || {
                while arm_rx.recv().is_ok() {
                    while !waiter.wait_inbound(Duration::from_secs(1)) {
                        if waiter.is_closed() {
                            return;
                        }
                    }
                    if tx.blocking_send(shard).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| err("thread")(&e))?;
        let _ = arm_tx.send(());
        arms.push(arm_tx);
    }
    let (room_tx, mut room_rx) = mpsc::unbounded_channel::<usize>();
    let mut waiting_room = vec![false; rings.len()];

    println!("cloudcontrol ready certs={cert_addr} shards={}", cfg.shards);
    let _ = std::io::stdout().flush();
    tracing::info!(manifests = ?manifests, kube = kube.is_some(), ring_dir = %cfg.ring_dir.display(), "started");

    let mut poll = tokio::time::interval(Duration::from_millis(cfg.poll_interval_ms));
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| err("signal")(&e))?;
    loop {
        tokio::select! {
            Some(shard) = inbound_rx.recv() => {
                loop {
                    let (records, cursor) = rings.read_batch(shard, BATCH).map_err(|e| err("ring")(&e))?;
                    let Some(cursor) = cursor else { break };
                    control.handle_records(records).map_err(|e| err("store")(&e))?;
                    rings.release(shard, cursor).map_err(|e| err("ring")(&e))?;
                    drain(&mut control, &mut rings);
                }
                let _ = arms[shard].send(());
            }
            Some(shard) = room_rx.recv() => {
                waiting_room[shard] = false;
            }
            Ok(()) = kube_rx.changed(), if kube.is_some() => {
                let Some(desired) = kube_rx.borrow_and_update().clone() else { continue };
                control.handle_desired(desired).map_err(|e| err("store")(&e))?;
                *boot.nodes.write().unwrap_or_else(|p| p.into_inner()) = control.edge_nodes();
            }
            _ = poll.tick(), if dir.is_some() => {
                let Some(dir) = dir.as_mut() else { continue };
                let (objects, problems) = dir.scan();
                for p in &problems {
                    tracing::error!("{p}");
                }
                if let Some(objects) = objects {
                    let desired = versions.apply(control.store_mut(), objects).map_err(|e| err("store")(&e))?;
                    control.handle_desired(desired).map_err(|e| err("store")(&e))?;
                    *boot.nodes.write().unwrap_or_else(|p| p.into_inner()) = control.edge_nodes();
                }
            }
            _ = tick.tick() => {
                control.handle_tick(unix_ms()).map_err(|e| err("store")(&e))?;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
        drain(&mut control, &mut rings);
        while let Some(change) = control.poll_status_change() {
            if let Some(tx) = &patches {
                let _ = tx.send(change);
            }
        }
        for (shard, waiting) in waiting_room.iter_mut().enumerate() {
            if *waiting {
                continue;
            }
            if let Some(bytes) = rings.drain(shard) {
                *waiting = true;
                tracing::debug!(
                    shard,
                    pending = rings.pending(shard),
                    "ring full: waiting for room"
                );
                let waiter = rings.waiter(shard);
                let tx = room_tx.clone();
                tokio::task::spawn_blocking(move || {
                    waiter.wait_outbound_room(bytes, Duration::from_millis(500));
                    let _ = tx.send(shard);
                });
            }
        }
    }
    control
        .handle_tick(u64::MAX)
        .map_err(|e| err("store")(&e))?;
    for shard in 0..rings.len() {
        rings.waiter(shard).close();
    }
    tracing::info!("stopped");
    Ok(())
}

fn drain(control: &mut Control, rings: &mut Rings) {
    while let Some((shard, record)) = control.poll_record() {
        rings.push(shard, &record);
    }
}
