//! Builds the built-in connectors (`connectors/`) for wasm32-wasip2 and embeds them in the binary,
//! so `keyport serve` needs no extra step.

#[path = "wasm_build.rs"]
mod wasm_build;

use std::fmt::Write;
use std::path::Path;

fn main() {
    // `sqlx::migrate!` embeds the migrations: rebuild when they change.
    println!("cargo:rerun-if-changed=../migrations");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent");
    let guests = wasm_build::build(
        &root.join("connectors"),
        &[&root.join("sdk"), &root.join("wit")],
    );
    let mut src = String::from(
        "/// The built-in connectors: (crate name, component bytes).\npub const BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for g in &guests {
        writeln!(
            src,
            "    ({:?}, include_bytes!({:?})),",
            g.name,
            g.wasm.display().to_string()
        )
        .unwrap();
    }
    src.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("builtin_connectors.rs");
    std::fs::write(out, src).expect("write builtin_connectors.rs");
}
