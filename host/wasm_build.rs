//! Builds a workspace of guest crates for `wasm32-wasip2`, from a build script.
//!
//! Shared by `host/build.rs` (the built-in connectors, embedded in the binary) and
//! `tests/artifacts/build.rs` (test guests). The guests get their own target directory beside the
//! host's (`<target>/wasm-guests`), a release profile, and none of the host's RUSTFLAGS or wrappers,
//! so `cargo build`, `cargo test` and `cargo clippy` all reuse one guest build.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// One built guest: crate name and the path of its `.wasm`.
pub struct Guest {
    pub name: String,
    pub wasm: PathBuf,
}

/// Builds every member of the guest workspace at `workspace` (a directory with a Cargo.toml).
/// `extra_watch` lists further paths whose changes must rebuild the guests.
pub fn build(workspace: &Path, extra_watch: &[&Path]) -> Vec<Guest> {
    for p in std::iter::once(workspace).chain(extra_watch.iter().copied()) {
        // (includes `.cargo/config.toml` inside the workspace)
        println!("cargo:rerun-if-changed={}", p.display());
    }
    ensure_target();

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    // OUT_DIR = <target>[/<triple>]/<profile>/build/<pkg>-<hash>/out
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .expect("OUT_DIR has the usual depth")
        .join("wasm-guests");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Run inside the guest workspace so its `.cargo/config.toml` (link flags) applies.
    cmd.current_dir(workspace);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("could not run cargo for the guests: {e}"));
    if !status.success() {
        panic!(
            "building the guests in {} for {TARGET} failed (see the compiler output above)",
            workspace.display()
        );
    }

    let release = target_dir.join(TARGET).join("release");
    members(workspace)
        .into_iter()
        .map(|name| {
            let wasm = release.join(format!("{}.wasm", name.replace('-', "_")));
            assert!(
                wasm.exists(),
                "guest {name} built, but {} is missing",
                wasm.display()
            );
            Guest { name, wasm }
        })
        .collect()
}

/// Package names of the workspace members: every direct or second-level subdirectory with a
/// Cargo.toml that builds a `cdylib`.
fn members(workspace: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![workspace.to_path_buf()];
    for depth in 0..2 {
        let mut next = Vec::new();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if !path.is_dir() || path.file_name().is_some_and(|n| n == "target") {
                    continue;
                }
                let manifest = path.join("Cargo.toml");
                match std::fs::read_to_string(&manifest) {
                    Ok(text) if text.contains("cdylib") => out.push(package_name(&text, &manifest)),
                    _ if depth == 0 => next.push(path),
                    _ => {}
                }
            }
        }
        dirs = next;
    }
    out.sort();
    out
}

fn package_name(manifest: &str, path: &Path) -> String {
    manifest
        .lines()
        .skip_while(|l| l.trim() != "[package]")
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("{} has no [package] name", path.display()))
}

/// The guests need the `wasm32-wasip2` standard library: install it with rustup when missing, or
/// stop with the exact command to run.
fn ensure_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |root: &Option<PathBuf>| {
        root.as_ref()
            .is_some_and(|r| r.join("lib/rustlib").join(TARGET).join("lib").is_dir())
    };
    if installed(&sysroot) {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with `rustup target add {TARGET}`");
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if !added || !installed(&sysroot) {
        panic!(
            "\n\nkeyport's connectors are built for {TARGET}, whose standard library is not \
             installed.\nRun:\n\n    rustup target add {TARGET}\n\nthen build again.\n"
        );
    }
}
