//! Builds the built-in connectors (`connectors/`) for wasm32-wasip2 and embeds them in the binary,
//! so `keyport serve` needs no extra step.

#[path = "wasm_build.rs"]
mod wasm_build;

use std::fmt::Write;
use std::path::Path;

fn main() {
    // `sqlx::migrate!` embeds the migrations: rebuild when they change.
    println!("cargo:rerun-if-changed=../migrations");
    // Read when the script runs, not baked in when it is compiled: cargo reuses a compiled build
    // script for another checkout of the same package that shares the target directory.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest_dir)
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
    // The provider catalogue (`catalogue/*.json`), embedded as text.
    println!("cargo:rerun-if-changed=../catalogue");
    let mut entries: Vec<_> = std::fs::read_dir(root.join("catalogue"))
        .expect("read catalogue/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    src.push_str(
        "/// The provider catalogue: (id, definition), from `catalogue/<id>.json`.\npub const CATALOGUE: &[(&str, &str)] = &[\n",
    );
    for p in &entries {
        println!("cargo:rerun-if-changed={}", p.display());
        let id = p.file_stem().unwrap().to_string_lossy();
        writeln!(
            src,
            "    ({id:?}, include_str!({:?})),",
            p.display().to_string()
        )
        .unwrap();
    }
    src.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("builtin_connectors.rs");
    std::fs::write(out, src).expect("write builtin_connectors.rs");
}
