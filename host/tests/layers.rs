//! The module map of `host/src/lib.rs` holds: every `crate::…` path in the host's source points
//! down the layers, never up. A new import that breaks a rule fails here with the file and the
//! module it reached for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which modules each module may use (besides itself). `*` means anything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("cli", &["*"]),
    (
        "fuzzing",
        &["proxy", "oauth", "vault", "webhooks", "runtime", "builtin"],
    ),
    ("seed", &["store", "vault", "model"]),
    (
        "api",
        &[
            "web",
            "auth",
            "connections",
            "proxy",
            "webhooks",
            "hotload",
            "providers",
            "catalogue",
            "registry",
            "runtime",
            "model",
            "mail",
        ],
    ),
    (
        "ui",
        &[
            "web",
            "auth",
            "connections",
            "proxy",
            "webhooks",
            "hotload",
            "providers",
            "catalogue",
            "registry",
            "runtime",
            "model",
        ],
    ),
    ("web", &["auth", "connections", "registry", "mail"]),
    ("mail", &["connections"]),
    (
        "auth",
        &["connections", "store", "oauth", "runtime", "vault", "model"],
    ),
    (
        "proxy",
        &[
            "connections",
            "events",
            "registry",
            "runtime",
            "store",
            "model",
        ],
    ),
    (
        "webhooks",
        &[
            "connections",
            "events",
            "runtime",
            "store",
            "vault",
            "model",
        ],
    ),
    (
        "hotload",
        &[
            "connections",
            "events",
            "registry",
            "runtime",
            "store",
            "model",
        ],
    ),
    (
        "providers",
        &[
            "connections",
            "events",
            "registry",
            "runtime",
            "store",
            "vault",
            "model",
        ],
    ),
    ("kit", &["runtime"]),
    (
        "catalogue",
        &["connections", "registry", "store", "builtin"],
    ),
    (
        "connections",
        &[
            "events", "oauth", "registry", "runtime", "store", "vault", "model",
        ],
    ),
    ("events", &["store", "model", "vault"]),
    ("oauth", &["runtime"]),
    ("registry", &["runtime", "builtin", "model"]),
    ("store", &["model"]),
    ("runtime", &[]),
    ("vault", &[]),
    ("model", &[]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`connections/refresh.rs` → `connections`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// `crate::x` references outside comments.
fn uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

#[test]
fn imports_point_down_the_layers_of_the_module_map() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut unknown = BTreeSet::new();
    for f in &files {
        let module = module_of(&src, f);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(may) = allowed.get(module.as_str()) else {
            unknown.insert(module);
            continue;
        };
        for used in uses(&std::fs::read_to_string(f).unwrap()) {
            if used != module && !may.contains(&"*") && !may.contains(&used.as_str()) {
                violations.push(format!(
                    "{} uses crate::{used}, which `{module}` may not use",
                    f.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules missing from the map in host/tests/layers.rs and host/src/lib.rs: {unknown:?}"
    );
    assert!(
        violations.is_empty(),
        "imports against the module map (host/src/lib.rs):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_map_itself_refuses_an_upward_import() {
    // The checker is not vacuous: an import of the API from the lifecycle is caught.
    let found = uses(
        "use crate::api::auth::Caller;\n// crate::ui in a comment\nlet x = crate::store::now_ms();",
    );
    assert_eq!(
        found,
        BTreeSet::from(["api".to_string(), "store".to_string()])
    );
    let connections = ALLOWED.iter().find(|(m, _)| *m == "connections").unwrap().1;
    for upper in ["api", "ui", "proxy", "webhooks", "hotload", "web", "auth"] {
        assert!(!connections.contains(&upper), "{upper}");
    }
    for m in ["api", "ui"] {
        let may = ALLOWED.iter().find(|(n, _)| *n == m).unwrap().1;
        assert!(!may.contains(&"store"), "{m} may not use the store");
        assert!(!may.contains(&if m == "api" { "ui" } else { "api" }));
    }
}
