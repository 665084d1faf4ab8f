//! `fleetbench`: Apiary's load generator and measurement tool.

use benches::codec::{CodecWorkload, measure};

#[global_allocator]
static ALLOCATOR: benches::alloc::Counting = benches::alloc::Counting;

const USAGE: &str = "\
usage: fleetbench <command>

commands:
  codec [--batch N] [--content BYTES] [--rounds N]
        encode and decode a batch through Apiary's frames and through
        Beehive JSON, interleaved; print median times and ratios
        (defaults: 64 messages, 256-byte content, 31 rounds)
  session-memory [--nodes N]
        resident memory per idle handshaken session of the hub engine
        (no sockets, no TLS: the engine's share of the per-node budget)
  idle | storm | downstream | upstream | mixed [flags]
        start cloudhub, connect a fleet of TLS edges (hub-core Link, one
        client certificate each, sources spread over 127.0.0.0/8), run the
        scenario and print its figures; JSON and an SVG plot go to --out
          --nodes N (1000)        --shards N (2)        --payload BYTES (256)
          --objects N (20)        downstream objects per node
          --rate MSG/S (0)        downstream rate over the fleet, 0 = flat out
          --upstream-rate R (1)   upstream messages/s per node
          --duration S (10)       seconds of upstream traffic
          --plaintext             edges use the hub's benchmark-only
                                  plaintext port (no TLS)
          --one-per-send          one message per frame and one frame per
                                  hub send (a window of 1 per node)
          --echo                  upstream: the control side sends each
                                  message back to its node, so the edges
                                  time edge → hub → control → hub → edge
          --max-nodes-per-process N   past N edges (or past the open-files
                                  limit) the edges run in child processes
                                  of fleetbench, their figures merged
          --client-threads N (2)  --backoff-ms MS (50)  --ring-bytes B (64 MiB)
          --hub-bin PATH          cloudhub to run (default: beside fleetbench,
                                  built with cargo if missing)
          --out DIR (target/fleetbench)
  fanout [--updates N (5)] [--control-bin PATH] [the same flags]
        downstream fanned out by a real cloudcontrol: a manifest directory
        of --nodes edge Nodes, a Pod on each referencing one ConfigMap of
        --payload bytes; measures the initial sync (Node, Pod, ConfigMap
        to every node), then rewrites the ConfigMap --updates times, each
        update received by every node before the next is written, and
        reports delivery, msg/s per hub and cloudcontrol CPU-second, and
        latency from the manifest write to each edge (cloudcontrol: beside
        fleetbench, built with cargo if missing, or --control-bin)
  edge [--rate MSG/S (1000)] [--duration S (10)] [--objects N]
        one real edgecore connected to a real cloudhub: resident memory
        idle and while messages arrive at --rate for --duration, then
        durable apply throughput with --objects messages flat out
        (use e.g. --objects 8000); --edge-bin PATH runs that edgecore,
        e.g. the small-hardware build `cargo build --profile edge -p
        edge-core` (target/edge/edgecore)
  compare [the same flags]
        the downstream workload (each node receives its own --objects
        messages) through Apiary, mosquitto (QoS 1, one topic per node),
        rumqttd (embedded) and nats-server (one subject per node), side by
        side with ratios; mosquitto and nats-server are started when
        installed (apt-get install mosquitto nats-server)
  --version

The criterion benches run with: cargo bench -p benches";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => println!("fleetbench {}", env!("CARGO_PKG_VERSION")),
        Some("session-memory") => match session_memory(&args[1..]) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("fleetbench session-memory: {e}\n\n{USAGE}");
                std::process::exit(2);
            }
        },
        Some("worker") => {
            if let Err(e) = benches::fleet::workers::worker_main(&args[1..]) {
                eprintln!("fleetbench worker: {e}");
                std::process::exit(1);
            }
        }
        Some("codec") => match codec(&args[1..]) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("fleetbench codec: {e}\n\n{USAGE}");
                std::process::exit(2);
            }
        },
        Some("compare") => {
            if let Err(e) = compare(&args[1..]) {
                eprintln!("fleetbench compare: {e}");
                std::process::exit(1);
            }
        }
        Some("fanout") => {
            if let Err(e) = fanout(&args[1..]) {
                eprintln!("fleetbench fanout: {e}");
                std::process::exit(1);
            }
        }
        Some(name) if benches::fleet::Scenario::parse(name).is_some() => {
            let scenario = benches::fleet::Scenario::parse(name).expect("checked");
            if let Err(e) = fleet(scenario, &args[1..]) {
                eprintln!("fleetbench {name}: {e}");
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

fn fleet(scenario: benches::fleet::Scenario, args: &[String]) -> Result<(), String> {
    let options = benches::fleet::Options::parse(args).map_err(|e| format!("{e}\n\n{USAGE}"))?;
    let report = benches::fleet::run(scenario, &options)?;
    println!("{}", report.markdown());
    let (json, svg) = report.write(&options.out)?;
    println!("figures: {}  plot: {}", json.display(), svg.display());
    Ok(())
}

fn fanout(args: &[String]) -> Result<(), String> {
    let options =
        benches::fleet::fanout::Options::parse(args).map_err(|e| format!("{e}\n\n{USAGE}"))?;
    let report = benches::fleet::fanout::run(&options)?;
    println!("{}", report.markdown());
    let (json, svg) = report.write(&options.fleet.out)?;
    println!("figures: {}  plot: {}", json.display(), svg.display());
    Ok(())
}

fn compare(args: &[String]) -> Result<(), String> {
    let options = benches::fleet::Options::parse(args).map_err(|e| format!("{e}\n\n{USAGE}"))?;
    let results = benches::fleet::compare::run(&options)?;
    println!(
        "{} nodes, {} messages of {} bytes each, point to point\n",
        options.nodes, options.objects, options.payload
    );
    println!("{}", benches::fleet::compare::markdown(&results));
    std::fs::create_dir_all(&options.out).map_err(|e| e.to_string())?;
    let path = options.out.join("fleetbench-compare.json");
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&path, json).map_err(|e| e.to_string())?;
    println!("figures: {}", path.display());
    Ok(())
}

fn codec(args: &[String]) -> Result<(), String> {
    let (mut batch, mut content, mut rounds) = (64u64, 256usize, 31usize);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |_| format!("{flag} takes a number, not {value:?}");
        match flag.as_str() {
            "--batch" => batch = value.parse().map_err(bad)?,
            "--content" => content = value.parse().map_err(bad)?,
            "--rounds" => rounds = value.parse().map_err(bad)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let mut workload = CodecWorkload::new(batch, content);
    let (frame_bytes, json_bytes) = workload.sizes();
    let iters = (200_000 / batch.max(1)).clamp(10, 10_000) as u32;
    let r = measure(&mut workload, rounds, iters);
    println!(
        "batch of {batch} messages, {content}-byte content: frame {frame_bytes} B, Beehive JSON {json_bytes} B"
    );
    println!("medians of {rounds} interleaved rounds of {iters} batches each:");
    println!("| path | apiary µs/batch | json µs/batch | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| decode, every field read | {:.2} | {:.2} | {:.1}× |",
        r.apiary_decode_ns / 1e3,
        r.json_decode_ns / 1e3,
        r.decode_ratio
    );
    println!(
        "| encode | {:.2} | {:.2} | {:.1}× |",
        r.apiary_encode_ns / 1e3,
        r.json_encode_ns / 1e3,
        r.encode_ratio
    );
    Ok(())
}

fn session_memory(args: &[String]) -> Result<(), String> {
    let nodes = match args {
        [] => 10_000,
        [flag, value] if flag == "--nodes" => value
            .parse()
            .map_err(|_| format!("--nodes takes a number, not {value:?}"))?,
        _ => return Err(format!("unexpected arguments {args:?}")),
    };
    let before = benches::alloc::live_bytes();
    let mut workload = benches::engine::EngineWorkload::new(nodes);
    let handshaken = benches::alloc::live_bytes();
    // One round of traffic, so that every session has grown its buffers once,
    // then a keepalive tick, on which idle sessions give them back.
    let messages = benches::engine::EngineWorkload::messages(workload.names(), 1, 4, 256);
    workload.round(messages);
    workload.idle_tick(16_000);
    let after = benches::alloc::live_bytes();
    let rss = resident_bytes()?;
    assert_eq!(workload.hub.connected(), nodes, "every session is still up");
    let per = |bytes: usize| bytes.saturating_sub(before) as f64 / nodes as f64;
    println!(
        "{nodes} sessions, engine only (no socket, no TLS), live heap bytes per session: \
         {:.0} after the handshake, {:.0} after a round of traffic and a keepalive tick \
         (process resident: {} MiB)",
        per(handshaken),
        per(after),
        rss >> 20
    );
    Ok(())
}

fn resident_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmRSS in /proc/self/status".to_owned())
}
