//! `fleetbench`: Apiary's load generator and measurement tool.

use benches::codec::{CodecWorkload, measure};

const USAGE: &str = "\
usage: fleetbench <command>

commands:
  codec [--batch N] [--content BYTES] [--rounds N]
        encode and decode a batch through Apiary's frames and through
        Beehive JSON, interleaved; print median times and ratios
        (defaults: 64 messages, 256-byte content, 31 rounds)
  --version

The criterion benches run with: cargo bench -p benches";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => println!("fleetbench {}", env!("CARGO_PKG_VERSION")),
        Some("codec") => match codec(&args[1..]) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("fleetbench codec: {e}\n\n{USAGE}");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
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
