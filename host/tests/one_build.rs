//! One build for `cargo run` and `cargo test`: every package the service builds gets the same
//! features whether or not the test-only dependencies are in the graph, so `cargo test` after
//! `cargo run` compiles only the test targets (see the alignment block in host/Cargo.toml).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Package → features, as `cargo tree` resolves them for `edges`.
fn features(args: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "--prefix",
            "none",
            "-f",
            "{p}|{f}",
        ])
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((package, list)) = line.split_once('|') else {
            continue;
        };
        let package = package.trim_end_matches(" (*)").trim().to_string();
        let entry = map.entry(package).or_default();
        for f in list.split(',') {
            let f = f.trim_end_matches(" (*)").trim();
            if !f.is_empty() {
                entry.insert(f.to_string());
            }
        }
    }
    map
}

#[test]
fn the_service_and_the_tests_share_one_feature_set() {
    let run = features(&["-p", "keyport", "-e", "normal,build"]);
    let test = features(&["--workspace", "-e", "normal,build,dev"]);
    assert!(run.len() > 100, "cargo tree listed {} packages", run.len());
    let mut differ = Vec::new();
    for (package, f) in &run {
        if let Some(t) = test.get(package)
            && t != f
        {
            differ.push(format!(
                "{package}: the tests add {:?}",
                t.difference(f).collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "`cargo test` would compile these (and everything built on them) a second time after `cargo run`; enable the same features in host/Cargo.toml's alignment block:\n{}",
        differ.join("\n")
    );
}
