//! `cloudcontrol`: Apiary's cloud controllers, feeding the cloudhub shards.

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version" | "-V") => println!("cloudcontrol {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!("usage: cloudcontrol [--version]");
            eprintln!("cloudcontrol does not run controllers yet in this build.");
            std::process::exit(2);
        }
    }
}
