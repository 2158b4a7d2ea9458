//! Manifest validation: what a connector's `describe` must return to be loaded, and its JSON view.
//!
//! | field | rule |
//! |---|---|
//! | id | `[a-z0-9][a-z0-9-]*`, at most 63 characters |
//! | display-name, version | not empty |
//! | api-base-url | an http(s) URL (placeholders `{field}` allowed), host covered by `egress-hosts` |
//! | egress-hosts | valid patterns (see [`super::egress`]) |
//! | oauth2 URLs | http(s) URLs; scope separator not empty |
//! | scopes | names not empty, unique |
//! | categories | at most 8, each `[a-z0-9][a-z0-9-]*`, at most 32 characters, unique |
//! | config-schema | JSON, an object schema, valid against the JSON Schema meta-schema, compilable |

use super::egress;
use super::{AuthScheme, CredentialPlacement, Manifest};

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ManifestError {
    /// The manifest field.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> ManifestError {
    ManifestError {
        field: field.into(),
        message: message.into(),
    }
}

use super::template::{self, sample};

/// An endpoint URL as written: `https://` (or `http://`) then a host name of letters, digits,
/// `-` and `.` (or an IP literal), placeholders allowed. Forms a URL parser would repair
/// (`https:/host`, `https:\\host`, odd characters in the host) are refused, so what a manifest
/// says is what keyport calls.
fn check_url(field: &str, value: &str) -> Result<url::Url, ManifestError> {
    let sampled = sample(value);
    let u = url::Url::parse(&sampled)
        .map_err(|e| err(field, format!("{value:?} is not a URL ({e})")))?;
    // The authority as written: a host name or IP literal and an optional port, nothing else
    // (no user info, no escapes), and exactly the host the parser finds (no `0x7f.1` for
    // 127.0.0.1).
    let host = u.host_str().unwrap_or_default();
    let port = u
        .port_or_known_default()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let authority_ok = sampled
        .strip_prefix("https://")
        .or_else(|| sampled.strip_prefix("http://"))
        .and_then(|rest| rest.split(['/', '?', '#']).next())
        .is_some_and(|a| {
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'))
                && (a.eq_ignore_ascii_case(host)
                    || a.eq_ignore_ascii_case(&format!("{host}{port}")))
        });
    if !matches!(u.scheme(), "https" | "http") || u.host().is_none() || !authority_ok {
        return Err(err(
            field,
            format!(
                "{value:?} must be an http(s) URL written as https://host/…, with a host name of letters, digits, '-' and '.'"
            ),
        ));
    }
    Ok(u)
}

/// Checks a manifest against the rules in this module's table.
pub fn validate_manifest(m: &Manifest) -> Result<(), ManifestError> {
    let id_ok = !m.id.is_empty()
        && m.id.len() <= 63
        && m.id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !m.id.starts_with('-');
    if !id_ok {
        return Err(err(
            "id",
            format!("{:?} must be 1-63 characters of a-z, 0-9 and '-'", m.id),
        ));
    }
    if m.display_name.trim().is_empty() {
        return Err(err("display-name", "must not be empty"));
    }
    if m.version.trim().is_empty() {
        return Err(err("version", "must not be empty (use semver, e.g. 0.1.0)"));
    }
    // Token-response fields are the provider's to choose: they may not pick an egress host.
    let token_fields: Vec<&str> = match &m.auth {
        AuthScheme::Oauth2(o) => o
            .token_paths
            .metadata
            .iter()
            .map(|(k, _)| k.as_str())
            .collect(),
        AuthScheme::ApiKey(_) => vec![],
    };
    for h in &m.egress_hosts {
        let found = template::parse(h).map_err(|e| err("egress-hosts", e))?;
        if !egress::valid_pattern(&template::sample_host(h))
            || (!found.is_empty() && h.starts_with('*'))
        {
            return Err(err(
                "egress-hosts",
                format!(
                    "{h:?} is not a host name, a `*.domain` pattern or a host with {{placeholders}} (no scheme, port or path)"
                ),
            ));
        }
        if let Some(f) = found
            .iter()
            .flat_map(|p| p.fields())
            .find(|f| token_fields.contains(f))
        {
            return Err(err(
                "egress-hosts",
                format!(
                    "{h:?} takes {{{f}}} from the token response: the provider would choose where the credential goes; list fixed hosts or *.domain patterns that cover it instead"
                ),
            ));
        }
    }
    for (name, value) in &m.api_headers {
        let found =
            template::parse(value).map_err(|e| err("api-headers", format!("{name}: {e}")))?;
        if let Some(f) = found.iter().flat_map(|p| p.fields()).find(|f| {
            [
                "access_token",
                "refresh_token",
                "client_secret",
                "api_key",
                "credential",
            ]
            .contains(f)
        }) {
            return Err(err(
                "api-headers",
                format!(
                    "{name}: {{{f}}} is a secret; the host places the credential where the manifest's credential placement says (a header placement's prefix may hold {{credential}})"
                ),
            ));
        }
    }
    if let CredentialPlacement::Header((_, prefix)) = &m.credential {
        template::parse(prefix).map_err(|e| err("credential", e))?;
    }
    if !m.api_base_url.is_empty() {
        template::parse(&m.api_base_url).map_err(|e| err("api-base-url", e))?;
        let u = check_url("api-base-url", &m.api_base_url)?;
        let host = u.host_str().unwrap_or_default();
        if !m.api_base_url.contains('{') && !egress::host_allowed(host, &m.egress_hosts) {
            return Err(err(
                "api-base-url",
                format!("host {host} is not in egress-hosts; add it there"),
            ));
        }
    }
    if let AuthScheme::Oauth2(o) = &m.auth {
        check_url("auth.authorize-url", &o.authorize_url)?;
        check_url("auth.token-url", &o.token_url)?;
        if let Some(u) = &o.refresh_url {
            check_url("auth.refresh-url", u)?;
        }
        if let Some(u) = &o.revoke_url {
            check_url("auth.revoke-url", u)?;
        }
        if o.scope_separator.is_empty() {
            return Err(err(
                "auth.scope-separator",
                "must not be empty (usually \" \" or \",\")",
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for s in &m.scopes {
        if s.name.trim().is_empty() {
            return Err(err("scopes", "a scope has an empty name"));
        }
        if !seen.insert(&s.name) {
            return Err(err("scopes", format!("scope {:?} is listed twice", s.name)));
        }
    }
    if m.categories.len() > 8 {
        return Err(err("categories", "at most 8 categories"));
    }
    let mut seen = std::collections::HashSet::new();
    for c in &m.categories {
        let ok = !c.is_empty()
            && c.len() <= 32
            && !c.starts_with('-')
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(err(
                "categories",
                format!("{c:?} must be 1-32 characters of a-z, 0-9 and '-', e.g. \"crm\""),
            ));
        }
        if !seen.insert(c) {
            return Err(err("categories", format!("{c:?} is listed twice")));
        }
    }
    config_schema(&m.config_schema)?;
    Ok(())
}

/// The `default`s of a schema's top-level properties.
pub fn schema_defaults(schema: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    if let Some(props) = schema
        .get("properties")
        .and_then(serde_json::Value::as_object)
    {
        for (k, p) in props {
            if let Some(d) = p.get("default") {
                out.insert(k.clone(), d.clone());
            }
        }
    }
    out
}

/// Parses and checks a config schema.
pub fn config_schema(text: &str) -> Result<serde_json::Value, ManifestError> {
    let field = "config-schema";
    let schema: serde_json::Value =
        serde_json::from_str(text).map_err(|e| err(field, format!("is not valid JSON: {e}")))?;
    if !schema.is_object() {
        return Err(err(field, "must be a JSON object (a JSON Schema)"));
    }
    if schema.get("type").and_then(|t| t.as_str()) != Some("object") {
        return Err(err(
            field,
            "must describe an object: add \"type\": \"object\"",
        ));
    }
    jsonschema::meta::validate(&schema).map_err(|e| {
        err(
            field,
            format!("is not a valid JSON Schema: {e} (at {})", e.instance_path()),
        )
    })?;
    jsonschema::validator_for(&schema)
        .map_err(|e| err(field, format!("cannot be compiled: {e}")))?;
    Ok(schema)
}

/// A loaded connector's manifest as the JSON API shows it: the manifest's fields (snake_case),
/// the config schema as a JSON object rather than a string, plus `auth_kind`, `contract` and `hash`.
pub fn manifest_json(connector: &super::Connector) -> serde_json::Value {
    let m = connector.manifest();
    let mut v = serde_json::to_value(m).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "config_schema".into(),
            serde_json::from_str(&m.config_schema).unwrap_or_default(),
        );
        let kind = match m.auth {
            AuthScheme::Oauth2(_) => "oauth2",
            AuthScheme::ApiKey(_) => "api-key",
        };
        obj.insert("auth_kind".into(), kind.into());
        obj.insert("contract".into(), connector.contract().into());
        obj.insert("hash".into(), connector.hash().into());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_written_as_they_are_called() {
        for good in [
            "https://slack.com/api/oauth.v2.access",
            "https://{subdomain}.acme.example/oauth/token",
            "http://127.0.0.1:8080/token",
            "https://[::1]:8443/t",
            "https://login.example.com:443/t",
        ] {
            assert!(check_url("f", good).is_ok(), "{good}");
        }
        for bad in [
            // Found by fuzzing: the parser repairs these into something else.
            "https:/(slack.com/token",
            "https:/slack.com/token",
            "https:\\\\slack.com/token",
            "https://user@slack.com/token",
            "https://sl%61ck.com/token",
            "https://0x7f.1/token",
            "https://(x).example/token",
            "ftp://slack.com/token",
        ] {
            assert!(check_url("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schemas() {
        assert!(
            config_schema(
                r#"{"type":"object","properties":{"a":{"type":"string","default":"x"}}}"#
            )
            .is_ok()
        );
        let e =
            config_schema(r#"{"type":"object","properties":{"a":{"type":"strnig"}}}"#).unwrap_err();
        assert!(e.message.contains("not a valid JSON Schema"), "{e}");
        assert!(
            config_schema("{")
                .unwrap_err()
                .message
                .contains("not valid JSON")
        );
        assert!(
            config_schema(r#"{"type":"string"}"#)
                .unwrap_err()
                .message
                .contains("object")
        );
    }
}
