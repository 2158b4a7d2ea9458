//! The connector authoring kit behind `keyport connector new | check | dev`: a crate scaffold,
//! a check that exercises the component (describe, validate-config, an account lookup against a
//! URL the author gives), and a rebuild-and-upload loop against a running host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::runtime::{
    AuthScheme, CallContext, CallEnv, Connector, Runtime, RuntimeConfig, Secret, SecretKind,
    manifest_json,
};

/// The stack size the host expects of a connector (see `connectors/.cargo/config.toml`).
pub const STACK_SIZE: u32 = 128 * 1024;

/// Which authentication a new connector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// OAuth 2 authorization code (with PKCE).
    Oauth2,
    /// An API key the user pastes.
    ApiKey,
}

/// Checks a connector name: it becomes the connector id and the crate name.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.as_bytes()[0].is_ascii_lowercase()
        && !name.ends_with('-');
    if !ok {
        bail!(
            "{name:?} cannot be a connector id: use 1-63 characters of a-z, 0-9 and '-', starting with a letter (e.g. acme-crm)"
        );
    }
    Ok(())
}

/// The words of a connector name, capitalised: `acme-crm` → `Acme`, `Crm`.
fn words(name: &str) -> Vec<String> {
    name.split('-')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Oauth2 => "OAuth 2",
            Kind::ApiKey => "API key",
        }
    }
}

/// The SDK dependency line of a new crate: the SDK next to these sources when it exists
/// (a keyport checkout), otherwise the repository.
fn sdk_dependency(sdk: Option<&Path>) -> String {
    let local = sdk
        .map(Path::to_path_buf)
        .or_else(|| Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")))
        .filter(|p| p.join("Cargo.toml").exists())
        .and_then(|p| p.canonicalize().ok());
    match local {
        Some(p) => format!("keyport-sdk = {{ path = {:?} }}", p.display().to_string()),
        None => "keyport-sdk = { git = \"https://github.com/keyport/keyport\" }".into(),
    }
}

fn cargo_toml(name: &str, sdk: Option<&Path>) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
{sdk}
serde_json = "1"

# Small, self-contained components: what the host loads fastest.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"

# A crate of its own, even inside another workspace.
[workspace]
"#,
        sdk = sdk_dependency(sdk)
    )
}

fn cargo_config() -> String {
    format!(
        r#"# Connectors are WebAssembly components: `cargo build` targets wasm32-wasip2.
[build]
target = "wasm32-wasip2"

# The host runs a fresh instance per call with a small stack; build with the stack it expects.
[target.wasm32-wasip2]
rustflags = ["-C", "link-arg=-zstack-size={STACK_SIZE}"]
"#
    )
}

fn lib_rs(name: &str, kind: Kind) -> String {
    let ty = words(name).concat();
    let display = words(name).join(" ");
    let (imports, manifest) = match kind {
        Kind::Oauth2 => (
            "Account, CallContext, Connector, Error, Manifest, Oauth2, Scope, export_connector, http,",
            format!(
                r#"        // Where users approve access and where keyport exchanges the code (PKCE is on).
        let oauth = Oauth2::new(
            "https://auth.example.com/oauth/authorize",
            "https://auth.example.com/oauth/token",
        )
        .revoke_url("https://auth.example.com/oauth/revoke");
        Manifest::oauth2("{name}", "{display}", "What {display} gives access to.", oauth)
            .version("0.1.0")
            .category("productivity")
            .api_base_url("https://api.example.com/v1/")
            // Every host the connector (or keyport, for the token endpoints) talks to.
            .egress_host("api.example.com")
            .egress_host("auth.example.com")
            .scope(Scope::required("read", "Read the account's data"))
            .scope(Scope::optional("write", "Change the account's data"))"#
            ),
        ),
        Kind::ApiKey => (
            "Account, ApiKey, AuthScheme, CallContext, Connector, Error, Manifest, export_connector, http,",
            format!(
                r#"        let mut m = Manifest::api_key("{name}", "{display}", "What {display} gives access to.")
            .version("0.1.0")
            .category("productivity")
            .api_base_url("https://api.example.com/v1/")
            // Every host the connector talks to.
            .egress_host("api.example.com");
        // What the connect dialog asks for.
        m.auth = AuthScheme::ApiKey(ApiKey {{
            label: "{display} API key".into(),
            help: "Create one under Settings → API keys in {display}.".into(),
        }});
        m"#
            ),
        ),
    };
    format!(
        r#"//! {display}: a keyport connector ({kind}).
//!
//! `describe` tells keyport how to authorise and where API calls go; `lookup_account` finds the
//! account behind a credential ("Connected as …"). keyport adds the credential to every request
//! sent with `http`: the component never sees it.

use keyport_sdk::{{
    {imports}
}};
use serde_json::{{Value, json}};

struct {ty};

impl Connector for {ty} {{
    fn describe() -> Manifest {{
{manifest}
            // Per-connection settings, as JSON Schema (the UI renders a form from it).
            .config_schema(json!({{
                "type": "object",
                "properties": {{
                    "region": {{
                        "type": "string",
                        "title": "Region",
                        "enum": ["us", "eu"],
                        "default": "us"
                    }}
                }}
            }}))
    }}

    fn lookup_account(_ctx: &CallContext) -> Result<Account, Error> {{
        // A relative URL resolves against the API base URL.
        let me: Value = http::get("me").send()?.error_for_status()?.json()?;
        let id = match &me["id"] {{
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(Error::provider("the answer of /me has no id")),
        }};
        let name = me["name"].as_str().unwrap_or(&id).to_string();
        let mut account = Account::new(id, name);
        if let Some(email) = me["email"].as_str() {{
            account = account.email(email);
        }}
        Ok(account)
    }}
}}

export_connector!({ty});
"#,
        kind = kind.label(),
    )
}

fn readme(name: &str, kind: Kind) -> String {
    let file = name.replace('-', "_");
    let grant = match kind {
        Kind::Oauth2 => "api.example.com,auth.example.com",
        Kind::ApiKey => "api.example.com",
    };
    format!(
        r#"# {name}

A keyport connector ({kind}), written with `keyport-sdk`. Replace the example.com URLs, scopes
and the account lookup in `src/lib.rs` with the provider's.

The three commands that matter:

```sh
# 1. build (the target comes from .cargo/config.toml; once: rustup target add wasm32-wasip2)
cargo build --release

# 2. check: loads it as the host does, validates the config defaults, and tries the account
#    lookup against a URL you give (a mock, or the provider's API) with a credential
keyport connector check target/wasm32-wasip2/release/{file}.wasm \
    --try-lookup https://api.example.com/v1/ --credential "$TOKEN"

# 3. load it into a running host, rebuilding and uploading on every save
KEYPORT_ADMIN_TOKEN=… keyport connector dev . --host http://127.0.0.1:8080
```

Without `dev`, upload the component yourself:
`curl -X POST -H "Authorization: Bearer $KEYPORT_ADMIN_TOKEN" --data-binary @target/wasm32-wasip2/release/{file}.wasm "http://127.0.0.1:8080/api/v1/admin/connectors?grant={grant}"`.
"#,
        kind = kind.label()
    )
}

/// `keyport connector new`: writes a complete connector crate into `dir/name`; returns its path.
pub fn scaffold(name: &str, kind: Kind, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "{} already exists; choose another name or directory (--dir)",
            root.display()
        );
    }
    std::fs::create_dir_all(root.join("src"))
        .and_then(|_| std::fs::create_dir_all(root.join(".cargo")))
        .with_context(|| format!("cannot create {}", root.display()))?;
    let files = [
        ("Cargo.toml", cargo_toml(name, sdk)),
        (".cargo/config.toml", cargo_config()),
        ("src/lib.rs", lib_rs(name, kind)),
        ("README.md", readme(name, kind)),
        (".gitignore", "/target\n".to_string()),
    ];
    for (file, text) in files {
        let path = root.join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(root)
}

/// What `connector check --try-lookup` saw.
pub struct Tried {
    /// The requests the component made: method and URL (without the credential).
    pub requests: Vec<String>,
    /// The account, or why the lookup failed.
    pub outcome: Result<Value, String>,
}

/// Everything `connector check` reports beyond loading: validate-config on the schema's
/// defaults, and optionally a lookup against `try_lookup` with `credential`.
pub async fn exercise(
    connector: &Connector,
    config: &Value,
    try_lookup: Option<(&str, &str)>,
) -> anyhow::Result<(Value, Option<Tried>)> {
    let m = connector.manifest();
    let schema = crate::runtime::config_schema(&m.config_schema)?;
    let mut effective = crate::runtime::schema_defaults(&schema);
    if let Value::Object(given) = config {
        effective.extend(given.clone());
    }
    let effective = Value::Object(effective);
    let problems = connector
        .validate_config(&effective.to_string())
        .await
        .map_err(|e| anyhow::anyhow!("validate-config failed: {e}"))?;
    let validated = json!({
        "config": effective,
        "field_errors": problems.iter().map(|f| json!({"path": f.path, "message": f.message})).collect::<Vec<_>>(),
    });
    let Some((url, credential)) = try_lookup else {
        return Ok((validated, None));
    };
    let base = if m.api_base_url.is_empty() {
        url.to_string()
    } else {
        crate::runtime::template::fill(
            &m.api_base_url,
            &crate::runtime::template::Vars::config(&effective),
            crate::runtime::template::Use::Url,
        )
        .map_err(|e| anyhow::anyhow!("the API base URL: {e}; give the setting with --config"))?
    };
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let secret = Secret::new(credential);
    let kind = match m.auth {
        AuthScheme::ApiKey(_) => SecretKind::ApiKey,
        AuthScheme::Oauth2(_) => SecretKind::AccessToken,
    };
    let env = CallEnv {
        credential: Some(secret.clone()),
        form_secrets: [(kind, secret)].into_iter().collect(),
        api_base_url: Some(base.clone()),
        // Requests to the API base go to the URL given instead (a mock, a sandbox).
        endpoint_overrides: vec![(base.clone(), url.to_string())],
        config: effective.clone(),
        request_log: Some(log.clone()),
        ..Default::default()
    };
    let result = connector
        .lookup_account(
            env,
            CallContext {
                config: effective.to_string(),
                metadata: "{}".into(),
                definition: String::new(),
            },
        )
        .await;
    let outcome = match result {
        Ok(Ok(a)) => {
            Ok(json!({"id": a.external_id, "display_name": a.display_name, "email": a.email}))
        }
        Ok(Err(e)) => Err(format!(
            "the connector answered {:?}: {}",
            e.kind, e.message
        )),
        Err(e) => Err(format!("the call failed: {e}")),
    };
    let requests = log.lock().map(|l| l.clone()).unwrap_or_default();
    Ok((validated, Some(Tried { requests, outcome })))
}

/// A runtime for `connector check`: loopback allowed (mocks on this machine), no cache.
pub fn check_runtime() -> anyhow::Result<Runtime> {
    Runtime::new(RuntimeConfig {
        allow_loopback: true,
        ..RuntimeConfig::default()
    })
}

/// The crate's package name, from its `Cargo.toml`.
fn package_name(dir: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(dir.join("Cargo.toml"))
        .with_context(|| format!("{} has no Cargo.toml", dir.display()))?;
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if in_package
            && let Some(v) = line.strip_prefix("name")
            && let Some(v) = v.trim_start().strip_prefix('=')
        {
            return Ok(v.trim().trim_matches('"').to_string());
        }
    }
    bail!("{}/Cargo.toml names no package", dir.display())
}

/// Builds the crate for wasm32-wasip2 (release); returns the component's path.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(dir)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("the build failed (cargo's messages are above)");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    let wasm = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package_name(dir)?.replace('-', "_")));
    if !wasm.exists() {
        bail!("the build produced no {}", wasm.display());
    }
    Ok(wasm)
}

/// Uploads a component to a running host, granting the egress hosts its manifest declares;
/// returns the host's answer (status, body).
pub async fn upload(
    host: &str,
    token: &str,
    wasm: &Path,
    egress: &[String],
) -> anyhow::Result<(u16, Value)> {
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let mut url = url::Url::parse(host)
        .with_context(|| format!("--host {host:?} is not a URL"))?
        .join("/api/v1/admin/connectors")?;
    if !egress.is_empty() {
        url.query_pairs_mut()
            .append_pair("grant", &egress.join(","));
    }
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("cannot reach {host}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// The newest modification time under the crate's sources.
pub fn sources_changed_at(dir: &Path) -> SystemTime {
    fn walk(p: &Path, newest: &mut SystemTime) {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if let Ok(m) = meta.modified()
            && m > *newest
        {
            *newest = m;
        }
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(p)
        {
            for e in entries.flatten() {
                walk(&e.path(), newest);
            }
        }
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    for p in ["src", "Cargo.toml", "Cargo.lock", ".cargo", "wit"] {
        walk(&dir.join(p), &mut newest);
    }
    newest
}

/// How often `connector dev` looks for changes.
pub const POLL: Duration = Duration::from_millis(500);

/// The egress hosts a component declares (to grant on upload), and its manifest as JSON.
pub async fn describe_file(runtime: &Runtime, wasm: &Path) -> anyhow::Result<(Vec<String>, Value)> {
    let bytes = std::fs::read(wasm)?;
    let c = runtime
        .load(&bytes)
        .await
        .map_err(|e| anyhow::anyhow!("{} is not a valid keyport connector: {e}", wasm.display()))?;
    Ok((c.manifest().egress_hosts.clone(), manifest_json(&c)))
}
