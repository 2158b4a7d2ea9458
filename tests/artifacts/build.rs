//! Builds the test guests (`tests/guests/`) for wasm32-wasip2 and exposes their paths as
//! constants. A guest without a constant here cannot be used by a test, and a constant without a
//! guest fails this build.

#[path = "../../host/wasm_build.rs"]
mod wasm_build;

use std::fmt::Write;
use std::path::Path;

fn main() {
    // Read when the script runs (see host/build.rs): a compiled build script is reused for
    // another checkout that shares the target directory.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest_dir).join("../..");
    let root = root.canonicalize().expect("repository root");
    let guests = wasm_build::build(
        &root.join("tests/guests"),
        &[&root.join("sdk"), &root.join("wit")],
    );
    let mut src = String::new();
    for g in &guests {
        let konst = g.name.to_uppercase().replace('-', "_");
        writeln!(
            src,
            "/// Path of the `{}` test guest.\npub const {konst}: &str = {:?};",
            g.name,
            g.wasm.display().to_string()
        )
        .unwrap();
    }
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(out, src).expect("write guests.rs");
}
