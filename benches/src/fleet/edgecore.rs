//! The `edge` scenario: one real `edgecore` process (link, LMDB store,
//! MetaServer and embedded MQTT broker all running) connected to a real
//! `cloudhub`; its resident memory idle and while downstream messages
//! arrive at `--rate`, then its durable apply throughput with
//! `--objects` messages pushed flat out (they must fit the node's queue
//! budget in the hub, 8 MiB by default: about 10,000 messages of 256
//! bytes; past it the hub asks for a resync instead).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::control::{self, ControlCounters, Work};
use super::hub::{self, Hub, HubOptions, resident_bytes};
use super::pki::Pki;
use super::report::{EdgeFigures, Report};
use super::stats::Stats;
use super::{Options, report};

const NODE: &str = "edge-bench";

struct Edge(Child);

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pushes `objects` messages for the edge (at `rate`, 0 = flat out) and
/// waits until the hub reports them all delivered, calling `watch` in
/// between. Returns the seconds it took.
fn phase(
    hub: &Hub,
    o: &Options,
    objects: u64,
    rate: f64,
    first_object: u64,
    mut watch: impl FnMut(),
) -> Result<f64, String> {
    let shard = usize::from(hub_core::shard_of(NODE, o.shards as u16));
    let ring = hub.rings()?.into_iter().nth(shard).ok_or("no ring")?;
    let counters = Arc::new(ControlCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let work = Work {
        nodes: vec![NODE.to_owned()],
        objects,
        rate,
        payload: o.payload,
        first_object,
        echo: false,
    };
    let started = Instant::now();
    let thread = control::spawn(
        ring,
        work,
        Arc::new(Stats::new(1)),
        counters.clone(),
        stop.clone(),
    );
    let deadline = started + Duration::from_secs(600);
    while counters.delivered.load(Ordering::Relaxed) < objects {
        if Instant::now() >= deadline {
            stop.store(true, Ordering::Relaxed);
            return Err(format!(
                "edgecore acknowledged {} of {objects} messages in 600 s",
                counters.delivered.load(Ordering::Relaxed)
            ));
        }
        watch();
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = thread.join();
    Ok(seconds)
}

/// Runs the scenario in `dir`.
pub fn run(o: &Options, dir: &Path) -> Result<Report, String> {
    let pki = Pki::new(dir).map_err(|e| e.to_string())?;
    let edgecore = match &o.edge_bin {
        Some(path) => path.clone(),
        None => hub::workspace_binary("edgecore", "edge-core")?,
    };
    let hub = Hub::start(
        dir,
        &pki,
        &HubOptions {
            binary: o.hub_bin.clone(),
            shards: o.shards,
            nodes: 1,
            ring_bytes: o.ring_bytes,
            plaintext: false,
            window: None,
        },
    )?;
    let (cert, key) = pki.client_files(NODE, dir).map_err(|e| e.to_string())?;
    let config = dir.join("edgecore.toml");
    let text = format!(
        "[database]\ndataSource = {data:?}\n\n\
         [modules.edgeHub]\nserver = \"127.0.0.1:{port}\"\ntlsCaFile = {ca:?}\n\
         tlsCertFile = {cert:?}\ntlsPrivateKeyFile = {key:?}\n\n\
         [modules.edged]\nhostnameOverride = \"{NODE}\"\n\n\
         [modules.metaManager.metaServer]\nserver = \"127.0.0.1:0\"\n\n\
         [modules.eventBus.broker]\nlisten = \"127.0.0.1:0\"\n",
        data = dir.join("edge-data"),
        port = hub.tls.port(),
        ca = pki.ca_file,
    );
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("edgecore.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(&edgecore)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("EDGECORE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", edgecore.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let edge = Edge(child);
    let status = format!("/proc/{}/status", edge.0.id());
    // The MetaServer and the broker listen once it prints their addresses.
    let mut lines = BufReader::new(stdout).lines();
    lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("mqtt="))
        .ok_or("edgecore did not start; see its log")?;
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});

    // Idle: one message through, so the link is up and the store open, then
    // let it settle.
    phase(&hub, o, 1, 0.0, 0, || {})?;
    std::thread::sleep(Duration::from_secs(2));
    let rss_idle = resident_bytes(&status);
    // At the rate, for the duration: the highest resident memory seen.
    let rate = if o.rate > 0.0 { o.rate } else { 1000.0 };
    let count = (rate * o.duration) as u64;
    let mut rss_loaded = rss_idle;
    phase(&hub, o, count, rate, 1, || {
        rss_loaded = rss_loaded.max(resident_bytes(&status));
    })?;
    // Flat out: durable apply throughput.
    let burst = o.objects.max(1);
    let seconds = phase(&hub, o, burst, 0.0, 1 + count, || {})?;
    Ok(Report {
        scenario: "edge".into(),
        machine: report::machine(),
        nodes: 1,
        shards: o.shards,
        payload_bytes: o.payload,
        hub_rss_bytes: hub.resident_bytes(),
        hub_cpu_seconds: hub.cpu_seconds(),
        fleetbench_cpu_seconds: hub::cpu_seconds("/proc/self/stat"),
        edge: Some(EdgeFigures {
            rss_idle_bytes: rss_idle,
            rss_loaded_bytes: rss_loaded,
            rate,
            apply_per_second: burst as f64 / seconds,
            apply_messages: burst,
        }),
        ..Report::default()
    })
}
