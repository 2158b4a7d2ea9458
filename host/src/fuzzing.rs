//! Fuzz targets: the parsers and checks that take untrusted bytes, each with the property it
//! must keep for every input. `fuzz/` runs them under libFuzzer (coverage-guided), and
//! `host/tests/fuzz_corpus.rs` replays every committed corpus input through them in the test
//! suite. See FUZZING.md.
//!
//! Each function panics exactly when the property breaks (or when the code under test panics),
//! which is what a fuzzer reports.

use std::sync::OnceLock;

use crate::runtime::{ConfigureError, CredentialPlacement, Manifest, Oauth2};

/// The proxy's path check: whatever it lets through stays under the connector's API base URL,
/// as the URL parser resolves it and as a server that decodes percent-escapes once more would.
pub fn proxy_path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if crate::proxy::check_path(raw).is_err() {
        return;
    }
    let base = "https://api.example.com/v1";
    let placement = CredentialPlacement::Query("api_key".into());
    match crate::proxy::target(base, raw, None, &placement) {
        Ok(url) => assert!(
            url.as_str().starts_with("https://api.example.com/v1/") || url.as_str() == base,
            "{raw:?} passed the check and became {url}"
        ),
        Err(e) => assert!(
            !e.to_string().contains("leaves"),
            "{raw:?} passed the check but leaves the base URL: {e}"
        ),
    }
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    if let Ok(url) = url::Url::parse(&format!("{base}/{decoded}")) {
        assert!(
            url.host_str() == Some("api.example.com") && url.path().starts_with("/v1"),
            "{raw:?} passed the check; decoded once more it reaches {url}"
        );
    }
}

/// The token-response reader: never panics; what it accepts carries an access token; an error
/// never repeats a token from the body.
pub fn token_response(data: &[u8]) {
    let (selector, body) = data.split_first().unwrap_or((&0, &[]));
    let oauth = token_scheme(*selector);
    let status = [200u16, 400, 401, 500][usize::from(selector >> 6)];
    let shown = match crate::oauth::parse_token_response(status, body, &oauth) {
        Ok(t) => {
            assert!(
                !t.access_token.is_empty(),
                "accepted without an access token"
            );
            return;
        }
        Err(e) => e.to_string(),
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    for field in ["access_token", "refresh_token"] {
        let Some(token) = v.get(field).and_then(|t| t.as_str()) else {
            continue;
        };
        if token.len() < 8 || !shown.contains(token) {
            continue;
        }
        // The message contains the token's text: a leak only if it comes from the token (not
        // from keyport's own wording, e.g. "answered HTTP 400", or another field that happens to
        // hold the same text). The same body with the token swapped for a marker found nowhere
        // in it must not show the marker.
        let text = String::from_utf8_lossy(body);
        let marker = (0u32..)
            .map(|n| format!("kpmarker{n}x"))
            .find(|m| !text.contains(m.as_str()))
            .expect("some marker is absent");
        let mut swapped = v.clone();
        swapped[field] = serde_json::Value::String(marker.clone());
        let again =
            crate::oauth::parse_token_response(status, swapped.to_string().as_bytes(), &oauth);
        if let Err(e) = again {
            assert!(
                !e.to_string().contains(&marker),
                "the error repeats the {field}"
            );
        }
    }
}

/// A standard scheme, or (by `selector`) one that reads tokens from nested paths the way some
/// providers answer (`authed_user.access_token`, `data.expires`).
fn token_scheme(selector: u8) -> Oauth2 {
    let mut o = crate::runtime::standard_oauth2();
    if selector & 1 == 1 {
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        o.token_paths.access_token = path(&["authed_user", "access_token"]);
        o.token_paths.refresh_token = path(&["authed_user", "refresh_token"]);
        o.token_paths.expires_in = path(&["data", "expires"]);
        o.token_paths.scope = path(&["authed_user", "scope"]);
        o.scope_separator = ",".into();
    }
    o
}

/// The vault: opening arbitrary bytes never panics and never succeeds; what it seals opens
/// only under the same context, and any changed byte makes it fail.
pub fn vault_open(data: &[u8]) {
    let ring = fuzz_ring();
    let ctx = crate::vault::Context {
        workspace: "w",
        row: "conn_1",
        field: "access_token",
    };
    assert!(
        ring.open(data, ctx).is_err(),
        "arbitrary bytes opened as a sealed secret"
    );
    let _ = crate::vault::key_id(data);
    let sealed = ring.seal(data, ctx);
    assert_eq!(&ring.open(&sealed, ctx).expect("opens").as_slice(), &data);
    let other = crate::vault::Context {
        row: "conn_2",
        ..ctx
    };
    assert!(
        ring.open(&sealed, other).is_err(),
        "opened under another row"
    );
    if !data.is_empty() {
        let mut tampered = sealed.clone();
        let at = usize::from(data[0]) % tampered.len();
        tampered[at] ^= 0x01;
        assert!(
            ring.open(&tampered, ctx).is_err(),
            "byte {at} changed unnoticed"
        );
    }
}

fn fuzz_ring() -> &'static crate::vault::KeyRing {
    static RING: OnceLock<crate::vault::KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        crate::vault::KeyRing::new(vec![("k1".into(), [7u8; 32])], "k1").expect("one key")
    })
}

/// The webhook signature verifier: never panics on any header; accepts what `sign` made for the
/// same body and secret, and nothing once the body changes.
pub fn webhook_signature(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (header, body) = text.split_once('\n').unwrap_or((&text, ""));
    let now = 1_700_000_000;
    let secret = "whsec_fuzz";
    let _ = crate::webhooks::verify(secret, header, body.as_bytes(), now, 300);
    let signed = crate::webhooks::sign(secret, now, body);
    assert_eq!(
        crate::webhooks::verify(secret, &signed, body.as_bytes(), now, 300),
        Ok(())
    );
    let mut changed = body.as_bytes().to_vec();
    changed.push(b'x');
    assert!(crate::webhooks::verify(secret, &signed, &changed, now, 300).is_err());
    assert!(crate::webhooks::verify("whsec_other", &signed, body.as_bytes(), now, 300).is_err());
}

/// Manifest validation on any manifest a connector could return: never panics, and a manifest
/// it accepts has an id and OAuth endpoints written as `http(s)://host/…` with a plain host name.
pub fn manifest(data: &[u8]) {
    let Ok(m) = serde_json::from_slice::<Manifest>(data) else {
        return;
    };
    if crate::runtime::validate_manifest(&m).is_ok() {
        assert!(!m.id.is_empty(), "accepted a manifest without an id");
        if let crate::runtime::AuthScheme::Oauth2(o) = &m.auth {
            for u in [&o.authorize_url, &o.token_url] {
                // With each `{placeholder}` as a plain label, the URL parser finds exactly the
                // host that is written: keyport calls what the manifest says.
                let plain = crate::runtime::sample_placeholders(u);
                let written = plain
                    .strip_prefix("https://")
                    .or_else(|| plain.strip_prefix("http://"))
                    .and_then(|r| r.split(['/', '?', '#']).next())
                    .unwrap_or_else(|| panic!("accepted the endpoint {u:?}"));
                let parsed = url::Url::parse(&plain).expect("accepted, so it parses");
                let host = parsed.host_str().unwrap_or_default();
                let port = parsed
                    .port_or_known_default()
                    .map(|p| format!(":{p}"))
                    .unwrap_or_default();
                assert!(
                    written.eq_ignore_ascii_case(&format!("{host}{port}"))
                        || written.eq_ignore_ascii_case(host),
                    "accepted the endpoint {u:?}: written {written:?}, called {host}{port}"
                );
            }
        }
    }
}

/// A custom provider definition, through the custom-oauth component as an import would run it:
/// any input is either refused with field errors or yields a valid manifest; the component never
/// traps.
pub fn provider_definition(data: &[u8]) {
    let Ok(definition) = std::str::from_utf8(data) else {
        return;
    };
    let (rt, template) = custom_oauth();
    match rt.block_on(template.configure(definition)) {
        Ok(c) => assert!(crate::runtime::validate_manifest(c.manifest()).is_ok()),
        Err(ConfigureError::Invalid(fields)) => assert!(!fields.is_empty()),
        Err(ConfigureError::Manifest(_)) => {}
        Err(ConfigureError::Call(e)) => panic!("the component failed on {definition:?}: {e}"),
    }
}

fn custom_oauth() -> &'static (tokio::runtime::Runtime, crate::runtime::Connector) {
    static LOADED: OnceLock<(tokio::runtime::Runtime, crate::runtime::Connector)> = OnceLock::new();
    LOADED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let runtime = crate::runtime::Runtime::new(Default::default()).expect("the wasm runtime");
        let bytes = crate::builtin::BUILTIN
            .iter()
            .find(|(n, _)| *n == "custom-oauth")
            .expect("custom-oauth is built in")
            .1;
        let connector = rt
            .block_on(runtime.load(bytes))
            .expect("custom-oauth loads");
        (rt, connector)
    })
}

/// A fuzz target: panics when its property breaks.
pub type Target = fn(&[u8]);

/// Every target by name (the corpus directories under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("proxy_path", proxy_path),
    ("token_response", token_response),
    ("vault_open", vault_open),
    ("webhook_signature", webhook_signature),
    ("manifest", manifest),
    ("provider_definition", provider_definition),
];
