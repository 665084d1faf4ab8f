//! `edgecore`: Apiary's edge daemon.

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version" | "-V") => println!("edgecore {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!("usage: edgecore [--version]");
            eprintln!("edgecore does not connect to a cloud yet in this build.");
            std::process::exit(2);
        }
    }
}
