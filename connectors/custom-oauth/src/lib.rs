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
//! | `api_base_url` | https URL | base of API calls (placeholders allowed) |
//! | `api_headers` | object of strings | extra headers on API calls |
//! | `egress_hosts` | list of host patterns | default: the hosts of the URLs above |
//! | `userinfo` | `{url, id, name?, email?}` | how to find the account: URL (absolute or relative to the API base) and dotted paths |
//! | `config_schema` | JSON Schema object | per-connection settings; default: one required string per `{placeholder}` |
//!
//! Errors name the field as a JSON Pointer (`/token_url`) and say what to write instead.

use keyport_sdk::{
    Account, CallContext, ClientAuth, Connector, Error, FieldError, Manifest, Oauth2, Scope,
    TokenPaths, export_connector, http,
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

/// The host part of a URL template (placeholders allowed), if it is an https URL.
fn url_host(template: &str) -> Option<String> {
    let rest = template
        .strip_prefix("https://")
        .or_else(|| template.strip_prefix("http://"))?;
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit('@').next()?.split(':').next()?;
    if host.is_empty() {
        return None;
    }
    // `{subdomain}.example.com` → `*.example.com`
    Some(match host.split_once('.') {
        Some((first, rest)) if first.contains('{') => format!("*.{rest}"),
        _ => host.to_lowercase(),
    })
}

fn url_field(d: &Value, key: &str, errors: &mut Vec<FieldError>, required: bool) -> Option<String> {
    let s = str_field(d, key, errors, required)?;
    let ok_scheme = s.starts_with("https://") || s.starts_with("http://");
    if !ok_scheme || url_host(s).is_none() || s.contains(char::is_whitespace) {
        errors.push(FieldError::new(
            format!("/{key}"),
            format!("{key} must be a full URL such as https://auth.example.com/oauth/token (placeholders like {{subdomain}} are allowed)"),
        ));
        return None;
    }
    if s.matches('{').count() != s.matches('}').count() {
        errors.push(FieldError::new(
            format!("/{key}"),
            format!("{key} has an unclosed {{placeholder}}"),
        ));
        return None;
    }
    Some(s.to_owned())
}

fn placeholders(s: &str, out: &mut Vec<String>) {
    let mut rest = s;
    while let Some(a) = rest.find('{') {
        let Some(b) = rest[a..].find('}') else { return };
        let name = &rest[a + 1..a + b];
        if !name.is_empty() && !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
        rest = &rest[a + b + 1..];
    }
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

/// Reads a definition into a manifest, collecting every field error.
fn manifest_for(d: &Value) -> Result<Manifest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let slug = str_field(d, "id", &mut errors, true).unwrap_or("");
    if !slug.is_empty()
        && (slug.len() > 40
            || !slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || slug.starts_with('-'))
    {
        errors.push(FieldError::new(
            "/id",
            "id must be 1-40 characters of a-z, 0-9 and '-', e.g. acme-crm",
        ));
    }
    let name = str_field(d, "display_name", &mut errors, true).unwrap_or("");
    for secret in ["client_secret", "client_id"] {
        if d.get(secret).is_some() {
            errors.push(FieldError::new(
                format!("/{secret}"),
                "client credentials are not part of the definition: set them in the provider app",
            ));
        }
    }
    let authorize = url_field(d, "authorization_url", &mut errors, true);
    let token = url_field(d, "token_url", &mut errors, true);
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
    if let Some(list) = d.get("scopes") {
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
    for (i, s) in defaults.iter().enumerate() {
        if !scopes.iter().any(|k| &k.name == s) {
            scopes.push(Scope::required(s, s));
            let _ = i;
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

    let userinfo = d.get("userinfo").filter(|v| !v.is_null());
    if let Some(u) = userinfo {
        match u.get("url").and_then(Value::as_str) {
            Some(url) if !url.trim().is_empty() => {
                if url.starts_with("http") && url_host(url).is_none() {
                    errors.push(FieldError::new(
                        "/userinfo/url",
                        "userinfo.url must be a URL or a path relative to api_base_url",
                    ));
                }
                if !url.starts_with("http") && api_base.is_none() {
                    errors.push(FieldError::new(
                        "/userinfo/url",
                        "a relative userinfo.url needs api_base_url",
                    ));
                }
            }
            _ => errors.push(FieldError::new(
                "/userinfo/url",
                "userinfo.url is required (e.g. https://api.example.com/me)",
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

    // Egress: explicit, or the hosts of the URLs the connector itself calls.
    let mut egress: Vec<String> = Vec::new();
    match d.get("egress_hosts") {
        Some(Value::Array(a)) => {
            for (i, h) in a.iter().enumerate() {
                match h.as_str() {
                    Some(h) if !h.is_empty() && !h.contains('/') && !h.contains(':') => {
                        egress.push(h.to_lowercase())
                    }
                    _ => errors.push(FieldError::new(
                        format!("/egress_hosts/{i}"),
                        "a host name such as api.example.com or *.example.com",
                    )),
                }
            }
        }
        None | Some(Value::Null) => {
            let mut candidates = vec![api_base.clone()];
            if let Some(u) = userinfo.and_then(|u| u.get("url")).and_then(Value::as_str) {
                candidates.push(Some(u.to_owned()));
            }
            for u in candidates.into_iter().flatten() {
                if let Some(h) = url_host(&u)
                    && !egress.contains(&h)
                {
                    egress.push(h);
                }
            }
        }
        Some(_) => errors.push(FieldError::new(
            "/egress_hosts",
            "egress_hosts must be a list of host names",
        )),
    }

    let mut fields = Vec::new();
    for u in [&authorize, &token, &refresh, &revoke, &api_base]
        .into_iter()
        .flatten()
    {
        placeholders(u, &mut fields);
    }
    let schema = match d.get("config_schema").filter(|v| !v.is_null()) {
        Some(Value::Object(o)) => {
            if o.get("type").and_then(Value::as_str) != Some("object") {
                errors.push(FieldError::new(
                    "/config_schema/type",
                    "config_schema must have \"type\": \"object\"",
                ));
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
            for f in &fields {
                props.insert(
                    f.clone(),
                    json!({"type": "string", "title": f, "pattern": "^[A-Za-z0-9._-]+$"}),
                );
            }
            json!({"type": "object", "required": fields, "properties": props})
        }
    };

    if !errors.is_empty() {
        return Err(errors);
    }
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
        oauth = oauth.authorize_param(&k, &v);
    }
    for (k, v) in params(d, "token_params", &mut errs) {
        oauth = oauth.token_param(&k, &v);
    }
    for (k, v) in params(d, "refresh_params", &mut errs) {
        oauth = oauth.refresh_param(&k, &v);
    }
    let description = d
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("A custom OAuth 2 provider.");
    let mut m = Manifest::oauth2(&format!("custom-{slug}"), name, description, oauth)
        .version(d.get("version").and_then(Value::as_str).unwrap_or("1.0.0"))
        .category("custom")
        .config_schema(schema);
    if let Some(icon) = d.get("icon").and_then(Value::as_str) {
        m = m.icon(icon);
    }
    if let Some(docs) = d.get("docs_url").and_then(Value::as_str) {
        m = m.docs_url(docs);
    }
    if let Some(base) = &api_base {
        m = m.api_base_url(base);
    }
    for (k, v) in params(d, "api_headers", &mut errs) {
        m = m.api_header(&k, &v);
    }
    for h in &egress {
        m = m.egress_host(h);
    }
    for s in scopes {
        m = m.scope(s);
    }
    if !errs.is_empty() {
        return Err(errs);
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
        let url = u["url"].as_str().unwrap_or_default();
        let me: Value = http::get(url).send()?.error_for_status()?.json()?;
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
