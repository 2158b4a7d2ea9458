//! Custom OAuth 2 providers, imported at runtime: one component serves them all, parameterised
//! by each provider's definition (`configure`).
//!
//! A definition (JSON object; client id and secret live in the provider app, not here):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `id` | string, `[a-z0-9-]`, ≤ 40 | the provider's slug; its connector id is `custom-<id>` |
//! | `display_name` | string | shown to users |
//! | `description`, `icon`, `docs_url` | string | optional |
//! | `authorization_url`, `token_url` | https URL | may hold `{field}` placeholders from the connection config |
//! | `refresh_url`, `revocation_url` | https URL | optional; refresh defaults to the token URL |
//! | `issuer` | URL | optional, for `iss` checks; `iss_required` (bool) when the provider always sends it |
//! | `scopes` | list of strings or `{name, description, required}` | what can be requested |
//! | `default_scopes` | list of strings | requested on every authorization |
//! | `scope_separator` | `" "`, `","` or `"+"` | default `" "` |
//! | `pkce` | bool | default `true` |
//! | `client_auth` | `"basic"` or `"body"` | default `"body"` |
//! | `token_request_body` | `"form"` or `"json"` | default `"form"` |
//! | `authorize_params`, `token_params`, `refresh_params` | object of strings | extra parameters (placeholders allowed) |
//! | `token_paths` | object: `access_token`, `refresh_token`, `expires_in`, `refresh_token_expires_in`, `scope`, `token_type` → dotted path or list of paths | where a non-standard token response keeps its values |
//! | `token_metadata` | object: name → dotted path | extra token-response fields kept with the connection (e.g. `instance_url`) |
//! | `api_base_url` | https URL | base of API calls (placeholders allowed; a placeholder may open it: `{instance_url}/services/data/`) |
//! | `api_headers` | object of strings | extra headers on API calls (placeholders and `{client_id}` allowed; a header holding `{access_token}` places the credential) |
//! | `credential` | `"bearer"`, `{header, value}` or `{query}` | where the credential goes on API calls: default Bearer; `{"header": "Authorization", "value": "Zoho-oauthtoken {access_token}"}`; `{"query": "access_token"}` |
//! | `egress_hosts` | list of host patterns | default: the hosts of the URLs above; `{placeholders}` from the config allowed (`{hostname}`, `api.{region}.example.com`) |
//! | `userinfo` | `{url, id, name?, email?, method?, body?}` | how to find the account: URL (absolute or relative to the API base, placeholders allowed), dotted paths into the answer, and `"POST"` with a JSON `body` for RPC or GraphQL endpoints |
//! | `config_schema` | JSON Schema object | per-connection settings; default: one string per `{placeholder}`, required unless it has a fallback; a placeholder in a host must be constrained by `enum`, `pattern` or `format: hostname` |
//! | `categories` | list of slugs | where the Integrations page lists it; default `["custom"]` |
//! | `auth` | `"oauth2"` or `"api_key"` | default `"oauth2"`; an API-key provider has no OAuth fields and may give `api_key: {label, help}` |
//! | `register_url`, `refresh`, `notes` | | catalogue facts for admins (where to register the app, refresh-token behaviour) |
//!
//! Placeholders: `{name}` (config field, then token-metadata field), `{a|b}` (first non-empty),
//! `'text'` literals (`{login_host|'login.salesforce.com'}`). A placeholder opening a URL stands
//! for an origin, one inside a host for host labels. Hosts that come from the token response are
//! the provider's choice, so they must be covered by fixed `egress_hosts` patterns.
//!
//! Errors name the field as a JSON Pointer (`/token_url`) and say what to write instead.

use keyport_sdk::{
    Account, ApiKey, AuthScheme, CallContext, ClientAuth, Connector, CredentialPlacement, Error,
    FieldError, Manifest, Oauth2, Scope, TokenPaths, export_connector, http,
};
use serde_json::{Map, Value, json};

struct CustomOAuth;

fn str_field<'a>(
    d: &'a Value,
    key: &str,
    errors: &mut Vec<FieldError>,
    required: bool,
) -> Option<&'a str> {
    match d.get(key) {
        None | Some(Value::Null) => {
            if required {
                errors.push(FieldError::new(
                    format!("/{key}"),
                    format!("{key} is required"),
                ));
            }
            None
        }
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.as_str()),
        Some(_) => {
            errors.push(FieldError::new(
                format!("/{key}"),
                format!("{key} must be a non-empty string"),
            ));
            None
        }
    }
}

/// One `{…}` in a template: its alternatives (field names and `'literals'`) and byte span.
struct Ph {
    alts: Vec<String>,
    start: usize,
    end: usize,
}

impl Ph {
    fn fields(&self) -> impl Iterator<Item = &str> {
        self.alts
            .iter()
            .filter(|a| !a.starts_with('\''))
            .map(String::as_str)
    }
    fn has_fallback(&self) -> bool {
        self.alts.len() > 1
    }
}

/// The placeholders of a template (the host's grammar: `{a|b|'literal'}`).
fn parse(t: &str) -> Result<Vec<Ph>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = t[i..].find(['{', '}']) {
        let start = i + off;
        if t.as_bytes()[start] == b'}' {
            return Err("has a '}' without its '{'".into());
        }
        let end = t[start..]
            .find('}')
            .map(|e| start + e)
            .ok_or("has an unclosed {placeholder}")?;
        let inner = &t[start + 1..end];
        if inner.contains('{') {
            return Err("nests a '{' inside a placeholder".into());
        }
        let mut alts = Vec::new();
        for alt in inner.split('|') {
            let ok = match alt.strip_prefix('\'').and_then(|a| a.strip_suffix('\'')) {
                Some(lit) => alt.len() >= 2 && !lit.contains('\''),
                None => {
                    !alt.is_empty()
                        && alt
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                }
            };
            if !ok {
                return Err(format!(
                    "{{{inner}}}: each alternative is a field name (letters, digits, '_', '-') or a 'quoted literal'"
                ));
            }
            alts.push(alt.to_owned());
        }
        out.push(Ph {
            alts,
            start,
            end: end + 1,
        });
        i = end + 1;
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Origin,
    Host,
    Other,
}

/// Where a placeholder stands in a URL template.
fn slot(t: &str, p: &Ph) -> Slot {
    if p.start == 0 {
        return Slot::Origin;
    }
    let Some(scheme) = t.find("://") else {
        return Slot::Other;
    };
    let a = scheme + 3;
    let b = t[a..].find(['/', '?', '#']).map_or(t.len(), |e| a + e);
    if p.start >= a && p.end <= b {
        Slot::Host
    } else {
        Slot::Other
    }
}

/// The egress pattern of a URL template's host: `api.example.com`, `*.zendesk.com` for
/// `{subdomain}.zendesk.com`, or the templated host itself (`{hostname}`, `api.{region}.x.com`);
/// `None` when a placeholder opens the URL (the host is the value's).
fn url_host(template: &str) -> Option<String> {
    if template.starts_with('{') {
        return None;
    }
    let rest = template
        .strip_prefix("https://")
        .or_else(|| template.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    // A literal port is not part of the pattern.
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty() => h,
        _ => authority,
    };
    let found = parse(host).ok()?;
    match found.as_slice() {
        [] => Some(host.to_lowercase()),
        // `{subdomain}.example.com` → `*.example.com`
        [p] if p.start == 0 && p.alts.len() == 1 && host[p.end..].starts_with('.') => {
            Some(format!("*{}", host[p.end..].to_lowercase()))
        }
        _ => Some(host.to_owned()),
    }
}

fn url_field(d: &Value, key: &str, errors: &mut Vec<FieldError>, required: bool) -> Option<String> {
    let s = str_field(d, key, errors, required)?;
    if let Err(e) = parse(s) {
        errors.push(FieldError::new(format!("/{key}"), format!("{key} {e}")));
        return None;
    }
    let opens_with_placeholder = s.starts_with('{')
        && parse(s)
            .ok()
            .and_then(|p| p.first().map(|p| p.end))
            .is_some_and(|end| s[end..].is_empty() || s[end..].starts_with(['/', '?']));
    let ok_scheme = s.starts_with("https://") || s.starts_with("http://");
    if !(opens_with_placeholder || ok_scheme && url_host(s).is_some())
        || s.contains(char::is_whitespace)
    {
        errors.push(FieldError::new(
            format!("/{key}"),
            format!("{key} must be a full URL such as https://auth.example.com/oauth/token (placeholders like {{subdomain}} are allowed, and one may open it: {{instance_url}}/api/)"),
        ));
        return None;
    }
    Some(s.to_owned())
}

/// Field names used by a URL template, with their slot and whether they have a fallback.
fn url_fields(t: &str, out: &mut Vec<(String, Slot, bool)>) {
    for p in parse(t).unwrap_or_default() {
        let sl = slot(t, &p);
        for f in p.fields() {
            out.push((f.to_owned(), sl, p.has_fallback()));
        }
    }
}

/// Fills a template from the connection's config and token-response fields (the host fills API
/// base URLs and headers; the component fills only its own account-lookup URL).
fn fill(t: &str, config: &Value, metadata: &Value) -> Result<String, Error> {
    let found = parse(t).map_err(Error::invalid_config)?;
    let mut out = String::new();
    let mut last = 0;
    for p in &found {
        out.push_str(&t[last..p.start]);
        last = p.end;
        let value = p.alts.iter().find_map(|a| match a.strip_prefix('\'') {
            Some(lit) => Some(lit.trim_end_matches('\'').to_owned()),
            None => [config.get(a), metadata.get(a)]
                .into_iter()
                .flatten()
                .filter_map(text)
                .find(|v| !v.is_empty()),
        });
        let value = value.filter(|v| !v.is_empty()).ok_or_else(|| {
            Error::invalid_config(format!(
                "the config field {:?} is required",
                p.fields().next().unwrap_or("?")
            ))
        })?;
        let allowed = |c: char| {
            c.is_ascii_alphanumeric()
                || "._-".contains(c)
                || (slot(t, p) != Slot::Other && c == ':')
                || (slot(t, p) == Slot::Origin && c == '/')
        };
        if !value.chars().all(allowed) {
            return Err(Error::invalid_config(format!(
                "the config field {:?} has characters a URL cannot take there",
                p.fields().next().unwrap_or("?")
            )));
        }
        out.push_str(value.trim_end_matches('/'));
    }
    out.push_str(&t[last..]);
    Ok(out)
}

fn params(d: &Value, key: &str, errors: &mut Vec<FieldError>) -> Vec<(String, String)> {
    match d.get(key) {
        None | Some(Value::Null) => vec![],
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k.clone(), s.clone())),
                Value::Number(n) => Some((k.clone(), n.to_string())),
                Value::Bool(b) => Some((k.clone(), b.to_string())),
                _ => {
                    errors.push(FieldError::new(format!("/{key}/{k}"), "must be a string"));
                    None
                }
            })
            .collect(),
        Some(_) => {
            errors.push(FieldError::new(
                format!("/{key}"),
                format!("{key} must be an object of name → value"),
            ));
            vec![]
        }
    }
}

fn paths(v: Option<&Value>, pointer: &str, errors: &mut Vec<FieldError>) -> Vec<String> {
    match v {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        Some(_) => {
            errors.push(FieldError::new(
                pointer,
                "must be a dotted path (authed_user.access_token) or a list of them",
            ));
            vec![]
        }
    }
}

fn enum_field<'a>(
    d: &'a Value,
    key: &str,
    allowed: &[&'a str],
    default: &'a str,
    errors: &mut Vec<FieldError>,
) -> &'a str {
    match d.get(key).and_then(Value::as_str) {
        None if d.get(key).is_none_or(Value::is_null) => default,
        Some(v) if allowed.contains(&v) => allowed
            .iter()
            .find(|a| **a == v)
            .copied()
            .unwrap_or(default),
        _ => {
            errors.push(FieldError::new(
                format!("/{key}"),
                format!("{key} must be one of: {}", allowed.join(", ")),
            ));
            default
        }
    }
}

/// Every field a definition may have; anything else is a typo and is refused.
const KNOWN_FIELDS: &[&str] = &[
    "id",
    "connector_id",
    "display_name",
    "description",
    "icon",
    "docs_url",
    "version",
    "categories",
    "register_url",
    "refresh",
    "notes",
    "auth",
    "api_key",
    "issuer",
    "iss_required",
    "authorization_url",
    "token_url",
    "refresh_url",
    "revocation_url",
    "scopes",
    "default_scopes",
    "scope_separator",
    "pkce",
    "client_auth",
    "token_request_body",
    "authorize_params",
    "token_params",
    "refresh_params",
    "token_paths",
    "token_metadata",
    "api_base_url",
    "api_headers",
    "credential",
    "egress_hosts",
    "userinfo",
    "config_schema",
];

const OAUTH_FIELDS: &[&str] = &[
    "issuer",
    "iss_required",
    "authorization_url",
    "token_url",
    "refresh_url",
    "revocation_url",
    "scope_separator",
    "pkce",
    "client_auth",
    "token_request_body",
    "authorize_params",
    "token_params",
    "refresh_params",
    "token_paths",
    "token_metadata",
];

fn slug_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

/// The credential placement a definition asks for (`credential`, or an API header holding the
/// token), with the API headers that remain.
fn credential_for(
    d: &Value,
    headers: Vec<(String, String)>,
    errors: &mut Vec<FieldError>,
) -> (CredentialPlacement, Vec<(String, String)>) {
    const TOKEN: [&str; 2] = ["access_token", "api_key"];
    let holds_token = |v: &str| {
        parse(v)
            .unwrap_or_default()
            .iter()
            .any(|p| p.fields().any(|f| TOKEN.contains(&f)))
    };
    // `{access_token}` (or `{api_key}`) in a header value becomes the host's `{credential}`.
    let header_placement =
        |name: &str, value: &str, pointer: &str, errors: &mut Vec<FieldError>| {
            let found = parse(value).unwrap_or_default();
            let slots: Vec<&Ph> = found
                .iter()
                .filter(|p| p.fields().any(|f| TOKEN.contains(&f)))
                .collect();
            if slots.len() != 1 || slots[0].alts.len() != 1 {
                errors.push(FieldError::new(
                    pointer,
                    "write the token exactly once, as {access_token} (without fallbacks)",
                ));
                return CredentialPlacement::Bearer;
            }
            let p = slots[0];
            let prefix = if p.end == value.len() && found.len() == 1 {
                value[..p.start].to_owned()
            } else {
                format!("{}{{credential}}{}", &value[..p.start], &value[p.end..])
            };
            CredentialPlacement::Header((name.to_owned(), prefix))
        };
    let mut rest = Vec::new();
    let mut from_headers = None;
    for (name, value) in headers {
        if holds_token(&value) {
            if from_headers.is_some() {
                errors.push(FieldError::new(
                    format!("/api_headers/{name}"),
                    "only one header may carry the token",
                ));
                continue;
            }
            from_headers = Some(header_placement(
                &name,
                &value,
                &format!("/api_headers/{name}"),
                errors,
            ));
        } else {
            rest.push((name, value));
        }
    }
    let explicit = match d.get("credential") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "bearer" => Some(CredentialPlacement::Bearer),
        Some(Value::Object(o)) => match (o.get("header"), o.get("value"), o.get("query")) {
            (Some(Value::String(h)), Some(Value::String(v)), None) if !h.is_empty() => {
                if holds_token(v) {
                    Some(header_placement(h, v, "/credential/value", errors))
                } else {
                    errors.push(FieldError::new(
                        "/credential/value",
                        "the value must hold the token as {access_token}, e.g. \"Zoho-oauthtoken {access_token}\"",
                    ));
                    None
                }
            }
            (None, None, Some(Value::String(q))) if !q.is_empty() => {
                Some(CredentialPlacement::Query(q.clone()))
            }
            _ => {
                errors.push(FieldError::new(
                    "/credential",
                    "credential must be \"bearer\", {\"header\": NAME, \"value\": \"… {access_token}\"} or {\"query\": NAME}",
                ));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new(
                "/credential",
                "credential must be \"bearer\", {\"header\": NAME, \"value\": \"… {access_token}\"} or {\"query\": NAME}",
            ));
            None
        }
    };
    let placement = match (explicit, from_headers) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "/credential",
                "the token is placed both by credential and by an API header; keep one",
            ));
            CredentialPlacement::Bearer
        }
        (Some(p), None) | (None, Some(p)) => p,
        (None, None) => CredentialPlacement::Bearer,
    };
    (placement, rest)
}

/// Reads a definition into a manifest, collecting every field error.
fn manifest_for(d: &Value) -> Result<Manifest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(obj) = d.as_object() else {
        return Err(vec![FieldError::new("", "a definition is a JSON object")]);
    };
    for k in obj.keys() {
        if !KNOWN_FIELDS.contains(&k.as_str()) && k != "client_id" && k != "client_secret" {
            errors.push(FieldError::new(
                format!("/{k}"),
                format!("unknown field {k:?}; see the definition format in the custom-oauth connector's documentation"),
            ));
        }
    }
    let api_key_auth = match d.get("auth").and_then(Value::as_str) {
        None if d.get("auth").is_none_or(Value::is_null) => false,
        Some("oauth2") => false,
        Some("api_key") => true,
        _ => {
            errors.push(FieldError::new(
                "/auth",
                "auth must be \"oauth2\" or \"api_key\"",
            ));
            false
        }
    };
    let slug = str_field(d, "id", &mut errors, true).unwrap_or("");
    if !slug.is_empty() && !slug_ok(slug, 40) {
        errors.push(FieldError::new(
            "/id",
            "id must be 1-40 characters of a-z, 0-9 and '-', e.g. acme-crm",
        ));
    }
    let connector_id = match str_field(d, "connector_id", &mut errors, false) {
        Some(c) if !slug_ok(c, 63) => {
            errors.push(FieldError::new(
                "/connector_id",
                "connector_id must be 1-63 characters of a-z, 0-9 and '-'",
            ));
            String::new()
        }
        Some(c) => c.to_owned(),
        None => format!("custom-{slug}"),
    };
    let name = str_field(d, "display_name", &mut errors, true).unwrap_or("");
    for secret in ["client_secret", "client_id"] {
        if d.get(secret).is_some() {
            errors.push(FieldError::new(
                format!("/{secret}"),
                "client credentials are not part of the definition: set them in the provider app",
            ));
        }
    }
    if api_key_auth {
        for k in OAUTH_FIELDS {
            if d.get(*k).is_some_and(|v| !v.is_null()) {
                errors.push(FieldError::new(
                    format!("/{k}"),
                    format!(
                        "{k} is an OAuth field; an API-key provider (auth \"api_key\") has none"
                    ),
                ));
            }
        }
    }
    let authorize = url_field(d, "authorization_url", &mut errors, !api_key_auth);
    let token = url_field(d, "token_url", &mut errors, !api_key_auth);
    let refresh = url_field(d, "refresh_url", &mut errors, false);
    let revoke = url_field(d, "revocation_url", &mut errors, false);
    let api_base = url_field(d, "api_base_url", &mut errors, false);
    let issuer = str_field(d, "issuer", &mut errors, false).map(str::to_owned);
    let separator = match d.get("scope_separator").and_then(Value::as_str) {
        None if d.get("scope_separator").is_none() => " ",
        Some(s @ (" " | "," | "+")) => s,
        _ => {
            errors.push(FieldError::new(
                "/scope_separator",
                "scope_separator must be \" \", \",\" or \"+\"",
            ));
            " "
        }
    };
    let client_auth = match enum_field(d, "client_auth", &["basic", "body"], "body", &mut errors) {
        "basic" => ClientAuth::Basic,
        _ => ClientAuth::Body,
    };
    let json_body = enum_field(
        d,
        "token_request_body",
        &["form", "json"],
        "form",
        &mut errors,
    ) == "json";
    let pkce = match d.get("pkce") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.push(FieldError::new("/pkce", "pkce must be true or false"));
            true
        }
    };
    let categories: Vec<String> = match d.get("categories") {
        None | Some(Value::Null) => vec!["custom".into()],
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= 8 => a
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c.as_str() {
                Some(c) if slug_ok(c, 32) => Some(c.to_owned()),
                _ => {
                    errors.push(FieldError::new(
                        format!("/categories/{i}"),
                        "a category is 1-32 characters of a-z, 0-9 and '-', e.g. \"crm\"",
                    ));
                    None
                }
            })
            .collect(),
        Some(_) => {
            errors.push(FieldError::new(
                "/categories",
                "categories must be a list of 1 to 8 slugs such as [\"crm\"]",
            ));
            vec![]
        }
    };

    let defaults: Vec<String> = match d.get("default_scopes") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        Some(_) => {
            errors.push(FieldError::new(
                "/default_scopes",
                "default_scopes must be a list of scope names",
            ));
            vec![]
        }
    };
    let mut scopes: Vec<Scope> = Vec::new();
    if let Some(list) = d.get("scopes").filter(|v| !v.is_null()) {
        match list.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let (sname, desc, req) = match item {
                        Value::String(s) => (s.clone(), s.clone(), false),
                        Value::Object(o) => (
                            o.get("name")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            o.get("description")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            o.get("required").and_then(Value::as_bool).unwrap_or(false),
                        ),
                        _ => (String::new(), String::new(), false),
                    };
                    if sname.trim().is_empty() || sname.contains(char::is_whitespace) {
                        errors.push(FieldError::new(
                            format!("/scopes/{i}"),
                            "a scope needs a name without spaces",
                        ));
                        continue;
                    }
                    if scopes.iter().any(|s| s.name == sname) {
                        errors.push(FieldError::new(
                            format!("/scopes/{i}"),
                            format!("scope {sname} is listed twice"),
                        ));
                        continue;
                    }
                    let desc = if desc.is_empty() { sname.clone() } else { desc };
                    let s = if req || defaults.contains(&sname) {
                        Scope::required(&sname, &desc)
                    } else {
                        Scope::optional(&sname, &desc)
                    };
                    scopes.push(s);
                }
            }
            None => errors.push(FieldError::new("/scopes", "scopes must be a list")),
        }
    }
    for s in &defaults {
        if !scopes.iter().any(|k| &k.name == s) {
            scopes.push(Scope::required(s, s));
        }
    }

    let mut token_paths = TokenPaths::default();
    if let Some(tp) = d.get("token_paths").filter(|v| !v.is_null()) {
        match tp.as_object() {
            Some(o) => {
                for (k, v) in o {
                    let p = paths(Some(v), &format!("/token_paths/{k}"), &mut errors);
                    match k.as_str() {
                        "access_token" => token_paths.access_token = p,
                        "refresh_token" => token_paths.refresh_token = p,
                        "expires_in" => token_paths.expires_in = p,
                        "refresh_token_expires_in" => token_paths.refresh_token_expires_in = p,
                        "scope" => token_paths.scope = p,
                        "token_type" => token_paths.token_type = p,
                        other => errors.push(FieldError::new(
                            format!("/token_paths/{other}"),
                            "unknown token path: use access_token, refresh_token, expires_in, refresh_token_expires_in, scope or token_type",
                        )),
                    }
                }
            }
            None => errors.push(FieldError::new(
                "/token_paths",
                "token_paths must be an object",
            )),
        }
    }
    for (k, v) in params(d, "token_metadata", &mut errors) {
        // Tokens are secrets: kept sealed in the token fields, never copied into metadata
        // (stored unencrypted, shown to every reader and sent in webhook bodies).
        let names_a_token = v.split('.').any(|segment| {
            let s = segment.to_ascii_lowercase();
            s == "access_token" || s == "refresh_token" || s == "id_token"
        }) || [&token_paths.access_token, &token_paths.refresh_token]
            .iter()
            .any(|paths| paths.iter().any(|p| p == &v));
        if names_a_token {
            errors.push(FieldError::new(
                format!("/token_metadata/{k}"),
                format!("{v:?} names a token; tokens are secrets and are never kept as metadata"),
            ));
            continue;
        }
        token_paths.metadata.push((k, v));
    }
    let token_fields: Vec<String> = token_paths
        .metadata
        .iter()
        .map(|(k, _)| k.clone())
        .collect();

    let userinfo = d.get("userinfo").filter(|v| !v.is_null());
    let mut userinfo_url = None;
    if let Some(u) = userinfo {
        match u.get("url").and_then(Value::as_str) {
            Some(url) if !url.trim().is_empty() => {
                if let Err(e) = parse(url) {
                    errors.push(FieldError::new(
                        "/userinfo/url",
                        format!("userinfo.url {e}"),
                    ));
                } else if (url.starts_with("http") || url.starts_with('{'))
                    && url_field(u, "url", &mut Vec::new(), true).is_none()
                {
                    errors.push(FieldError::new(
                        "/userinfo/url",
                        "userinfo.url must be a URL or a path relative to api_base_url",
                    ));
                } else if !url.starts_with("http") && !url.starts_with('{') && api_base.is_none() {
                    errors.push(FieldError::new(
                        "/userinfo/url",
                        "a relative userinfo.url needs api_base_url",
                    ));
                } else {
                    userinfo_url = Some(url.to_owned());
                }
            }
            _ => errors.push(FieldError::new(
                "/userinfo/url",
                "userinfo.url is required (e.g. https://api.example.com/me)",
            )),
        }
        match (u.get("method"), u.get("body")) {
            (None | Some(Value::Null), None) => {}
            (Some(Value::String(m)), _) if m == "POST" => {}
            (Some(Value::String(m)), None) if m == "GET" => {}
            _ => errors.push(FieldError::new(
                "/userinfo/method",
                "userinfo.method is \"GET\" (default) or \"POST\"; a body (JSON, e.g. a GraphQL query) goes only with POST",
            )),
        }
        if u.get("id")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errors.push(FieldError::new(
                "/userinfo/id",
                "userinfo.id is required: the dotted path of the account id (e.g. sub or data.id)",
            ));
        }
    }

    // The placeholders of every URL, by slot.
    let mut used: Vec<(String, Slot, bool)> = Vec::new();
    for u in [
        &authorize,
        &token,
        &refresh,
        &revoke,
        &api_base,
        &userinfo_url,
    ]
    .into_iter()
    .flatten()
    {
        if u.starts_with("http") || u.starts_with('{') {
            url_fields(u, &mut used);
        } else {
            for p in parse(u).unwrap_or_default() {
                for f in p.fields() {
                    used.push((f.to_owned(), Slot::Other, p.has_fallback()));
                }
            }
        }
    }

    // Egress: explicit, or the hosts of the URLs the connector itself calls.
    let explicit_egress = d.get("egress_hosts").filter(|v| !v.is_null());
    let mut egress: Vec<String> = Vec::new();
    match explicit_egress {
        Some(Value::Array(a)) => {
            for (i, h) in a.iter().enumerate() {
                let pointer = format!("/egress_hosts/{i}");
                match h.as_str() {
                    Some(h) if !h.is_empty() && !h.contains('/') && !h.contains('@') => {
                        match parse(h) {
                            Err(e) => errors.push(FieldError::new(pointer, format!("{h} {e}"))),
                            Ok(found) => {
                                if let Some(f) = found
                                    .iter()
                                    .flat_map(|p| p.fields())
                                    .find(|f| token_fields.iter().any(|t| t == f))
                                {
                                    errors.push(FieldError::new(
                                        pointer,
                                        format!("{{{f}}} comes from the token response, so the provider would choose where the token goes; list fixed hosts or *.domain patterns that cover it"),
                                    ));
                                } else if found.is_empty() && h.contains(':') {
                                    errors.push(FieldError::new(
                                        pointer,
                                        "a host name without a port, such as api.example.com",
                                    ));
                                } else {
                                    for p in &found {
                                        for f in p.fields() {
                                            used.push((f.to_owned(), Slot::Host, p.has_fallback()));
                                        }
                                    }
                                    egress.push(if found.is_empty() {
                                        h.to_lowercase()
                                    } else {
                                        h.to_owned()
                                    });
                                }
                            }
                        }
                    }
                    _ => errors.push(FieldError::new(
                        pointer,
                        "a host name such as api.example.com, *.example.com or {hostname}",
                    )),
                }
            }
        }
        None => {
            let mut candidates = vec![api_base.clone()];
            if let Some(u) = &userinfo_url {
                candidates.push(Some(u.clone()));
            }
            for u in candidates.into_iter().flatten() {
                if !(u.starts_with("http") || u.starts_with('{')) {
                    continue;
                }
                let from_token = parse(&u)
                    .unwrap_or_default()
                    .iter()
                    .filter(|p| slot(&u, p) != Slot::Other)
                    .flat_map(|p| p.fields().map(str::to_owned).collect::<Vec<_>>())
                    .find(|f| token_fields.contains(f));
                match (url_host(&u), from_token) {
                    (_, Some(f)) => errors.push(FieldError::new(
                        "/egress_hosts",
                        format!("{u} takes its host from {{{f}}}, a token-response field the provider chooses: list in egress_hosts the fixed hosts or *.domain patterns it may take (e.g. *.my.salesforce.com)"),
                    )),
                    (None, None) => errors.push(FieldError::new(
                        "/egress_hosts",
                        format!("{u} opens with a placeholder, so its host is not known: list in egress_hosts the hosts or *.domain patterns it may take"),
                    )),
                    (Some(h), None) => {
                        if !egress.contains(&h) {
                            egress.push(h);
                        }
                    }
                }
            }
        }
        Some(_) => errors.push(FieldError::new(
            "/egress_hosts",
            "egress_hosts must be a list of host names",
        )),
    }

    // Token, refresh and revocation URLs receive the client secret: when their host comes from
    // the settings, fixed egress patterns must say where it may go (the host checks every filled
    // host against them).
    if !egress.iter().any(|h| !h.contains('{')) {
        for (key, u) in [
            ("token_url", &token),
            ("refresh_url", &refresh),
            ("revocation_url", &revoke),
        ] {
            let Some(u) = u else { continue };
            if parse(u)
                .unwrap_or_default()
                .iter()
                .any(|p| slot(u, p) != Slot::Other)
            {
                errors.push(FieldError::new(
                    format!("/{key}"),
                    format!("the host of {key} comes from the settings and receives the client secret: list in egress_hosts the fixed hosts or *.domain patterns it may take"),
                ));
            }
        }
    }

    // Per-connection settings: config fields are the placeholders not from the token response.
    let config_fields: Vec<&(String, Slot, bool)> = used
        .iter()
        .filter(|(f, _, _)| !token_fields.contains(f))
        .collect();
    for (f, sl, _) in &config_fields {
        if *sl == Slot::Origin && explicit_egress.is_none() {
            errors.push(FieldError::new(
                "/egress_hosts",
                format!("{{{f}}} opens a URL, so its host is not known: list in egress_hosts the hosts or *.domain patterns it may take"),
            ));
        }
    }
    let schema = match d.get("config_schema").filter(|v| !v.is_null()) {
        Some(Value::Object(o)) => {
            if o.get("type").and_then(Value::as_str) != Some("object") {
                errors.push(FieldError::new(
                    "/config_schema/type",
                    "config_schema must have \"type\": \"object\"",
                ));
            }
            for (f, sl, _) in &config_fields {
                let prop = o.get("properties").and_then(|p| p.get(f));
                match prop {
                    None => errors.push(FieldError::new(
                        format!("/config_schema/properties/{f}"),
                        format!("{{{f}}} is used in a URL: declare it in config_schema.properties"),
                    )),
                    Some(p)
                        if *sl != Slot::Other
                            && p.get("enum").is_none()
                            && p.get("pattern").is_none()
                            && p.get("format").and_then(Value::as_str) != Some("hostname") =>
                    {
                        errors.push(FieldError::new(
                            format!("/config_schema/properties/{f}"),
                            format!("{{{f}}} is part of a host: constrain it with \"enum\", \"pattern\" or \"format\": \"hostname\""),
                        ))
                    }
                    Some(_) => {}
                }
            }
            Value::Object(o.clone())
        }
        Some(_) => {
            errors.push(FieldError::new(
                "/config_schema",
                "config_schema must be a JSON Schema object",
            ));
            json!({})
        }
        None => {
            let mut props = Map::new();
            let mut required: Vec<String> = Vec::new();
            for (f, sl, fallback) in &config_fields {
                let needed = !fallback;
                let pattern = match sl {
                    Slot::Origin => "^https?://[A-Za-z0-9.-]+(:[0-9]+)?/?$",
                    Slot::Host => "^[A-Za-z0-9.-]+(:[0-9]+)?$",
                    Slot::Other => "^[A-Za-z0-9._-]+$",
                };
                props
                    .entry(f.clone())
                    .or_insert_with(|| json!({"type": "string", "title": f, "pattern": pattern}));
                if needed && !required.contains(f) {
                    required.push(f.clone());
                }
            }
            // A field with a fallback anywhere is optional everywhere.
            required.retain(|f| !config_fields.iter().any(|(g, _, fb)| g == f && *fb));
            json!({"type": "object", "required": required, "properties": props})
        }
    };

    let (placement, headers) = {
        let headers = params(d, "api_headers", &mut errors);
        for (k, v) in &headers {
            if let Err(e) = parse(v) {
                errors.push(FieldError::new(
                    format!("/api_headers/{k}"),
                    format!("{k} {e}"),
                ));
            }
        }
        credential_for(d, headers, &mut errors)
    };

    if !errors.is_empty() {
        return Err(errors);
    }
    let description = d
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or(if api_key_auth {
            "A custom API-key provider."
        } else {
            "A custom OAuth 2 provider."
        });
    let mut m = if api_key_auth {
        let mut m = Manifest::api_key(&connector_id, name, description);
        if let Some(k) = d.get("api_key").filter(|v| !v.is_null()) {
            m.auth = AuthScheme::ApiKey(ApiKey {
                label: k["label"].as_str().unwrap_or("API key").to_owned(),
                help: k["help"].as_str().unwrap_or_default().to_owned(),
            });
        }
        m
    } else {
        let (Some(authorize), Some(token)) = (authorize, token) else {
            return Err(vec![FieldError::new(
                "",
                "authorization_url and token_url are required",
            )]);
        };
        let mut oauth = Oauth2::new(&authorize, &token)
            .scope_separator(separator)
            .client_auth(client_auth)
            .token_paths(token_paths);
        if !pkce {
            oauth = oauth.without_pkce();
        }
        if json_body {
            oauth = oauth.json_token_body();
        }
        if let Some(u) = &refresh {
            oauth = oauth.refresh_url(u);
        }
        if let Some(u) = &revoke {
            oauth = oauth.revoke_url(u);
        }
        if let Some(i) = &issuer {
            oauth = oauth.issuer(
                i,
                d.get("iss_required")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            );
        }
        let mut errs = Vec::new();
        for (k, v) in params(d, "authorize_params", &mut errs) {
            if [
                "client_id",
                "redirect_uri",
                "state",
                "code_challenge",
                "code_challenge_method",
            ]
            .contains(&k.as_str())
            {
                errs.push(FieldError::new(
                    format!("/authorize_params/{k}"),
                    format!("keyport sets {k} itself; it cannot be replaced"),
                ));
                continue;
            }
            oauth = oauth.authorize_param(&k, &v);
        }
        for (k, v) in params(d, "token_params", &mut errs) {
            oauth = oauth.token_param(&k, &v);
        }
        for (k, v) in params(d, "refresh_params", &mut errs) {
            oauth = oauth.refresh_param(&k, &v);
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Manifest::oauth2(&connector_id, name, description, oauth)
    };
    m = m
        .version(d.get("version").and_then(Value::as_str).unwrap_or("1.0.0"))
        .config_schema(schema)
        .credential(placement);
    for c in &categories {
        m = m.category(c);
    }
    if let Some(icon) = d.get("icon").and_then(Value::as_str) {
        m = m.icon(icon);
    }
    if let Some(docs) = d.get("docs_url").and_then(Value::as_str) {
        m = m.docs_url(docs);
    }
    if let Some(base) = &api_base {
        m = m.api_base_url(base);
    }
    for (k, v) in &headers {
        m = m.api_header(k, v);
    }
    for h in &egress {
        m = m.egress_host(h);
    }
    for s in scopes {
        m = m.scope(s);
    }
    Ok(m)
}

/// Follows a dotted path.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Connector for CustomOAuth {
    fn describe() -> Manifest {
        // The template itself: usable only once configured with a definition.
        let oauth = Oauth2::new(
            "https://provider.invalid/oauth/authorize",
            "https://provider.invalid/oauth/token",
        );
        Manifest::oauth2(
            "custom-oauth",
            "Custom OAuth 2 provider",
            "Serves OAuth 2 providers imported at runtime from their definitions.",
            oauth,
        )
        .version("0.1.0")
        .category("custom")
        .configurable()
    }

    fn configure(definition: &Value) -> Result<Manifest, Vec<FieldError>> {
        manifest_for(definition)
    }

    fn lookup_account(ctx: &CallContext) -> Result<Account, Error> {
        let d = ctx.definition();
        let Some(u) = d.get("userinfo").filter(|v| !v.is_null()) else {
            // No account endpoint: the provider's name stands for the account.
            let name = d["display_name"].as_str().unwrap_or("Account");
            return Ok(Account::new(d["id"].as_str().unwrap_or("account"), name));
        };
        let url = fill(
            u["url"].as_str().unwrap_or_default(),
            &ctx.config(),
            &ctx.metadata(),
        )?;
        let request = match u.get("method").and_then(Value::as_str) {
            Some("POST") => http::post(&url).json(u.get("body").unwrap_or(&Value::Null)),
            _ => http::get(&url),
        };
        let me: Value = request.send()?.error_for_status()?.json()?;
        let id = u["id"]
            .as_str()
            .and_then(|p| at(&me, p))
            .and_then(text)
            .ok_or_else(|| {
                Error::provider(format!(
                    "the userinfo answer has no {}",
                    u["id"].as_str().unwrap_or("id")
                ))
            })?;
        let name = u["name"]
            .as_str()
            .and_then(|p| at(&me, p))
            .and_then(text)
            .unwrap_or_else(|| id.clone());
        let mut account = Account::new(id, name);
        if let Some(email) = u["email"].as_str().and_then(|p| at(&me, p)).and_then(text) {
            account = account.email(email);
        }
        Ok(account)
    }
}

export_connector!(CustomOAuth);
