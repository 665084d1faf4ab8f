//! `cloudhub`: Apiary's cloud hub, one glommio executor per core.

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version" | "-V") => println!("cloudhub {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!("usage: cloudhub [--version]");
            eprintln!("cloudhub does not serve links yet in this build.");
            std::process::exit(2);
        }
    }
}
