//! HubSpot, through OAuth 2 on the dated 2026-03 endpoints (the v1 ones sunset on 2027-02-16).
//!
//! Quirks: 30-minute access tokens; optional scopes travel in `optional_scope`; granted scopes come
//! back as an array (`scopes`); the account comes from token introspection (`hub_domain`,
//! `hub_id`, `user`), which needs the client credentials and the token in a form body — the host
//! adds them, the connector never sees them; older error bodies are `{status, message}`
//! (`BAD_REFRESH_TOKEN`), newer ones add `error` / `error_description`.

use keyport_sdk::http::SecretRef;
use keyport_sdk::{
    Account, CallContext, Connector, Error, Manifest, Oauth2, Scope, TokenPaths, TokenSet,
    export_connector, http,
};
use serde_json::Value;

struct HubSpot;

const BASE: &str = "https://api.hubapi.com";

const ICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#ff7a59"/><circle cx="19" cy="18" r="4.5" fill="none" stroke="#fff" stroke-width="2.5"/><path stroke="#fff" stroke-width="2.5" d="M19 13.5V8M9 10l7 5.5M15 22l-4 3"/><circle cx="19" cy="7" r="2" fill="#fff"/></svg>"##;

const CONFIG_SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "default_pipeline": {
      "type": "string", "title": "Default pipeline", "default": "default", "maxLength": 64,
      "description": "Pipeline for new deals when a workflow names none."
    },
    "default_owner": {
      "type": "string", "title": "Default owner ID", "default": "", "pattern": "^[0-9]*$",
      "description": "HubSpot owner ID assigned to new records when a workflow names none (digits)."
    }
  }
}"#;

impl Connector for HubSpot {
    fn describe() -> Manifest {
        let paths = TokenPaths {
            scope: vec!["scopes".into(), "scope".into()],
            metadata: vec![("hub_id".into(), "hub_id".into())],
            ..TokenPaths::default()
        };
        let oauth = Oauth2::new(
            "https://app.hubspot.com/oauth/authorize",
            &format!("{BASE}/oauth/2026-03/token"),
        )
        .revoke_url(&format!("{BASE}/oauth/2026-03/token/revoke"))
        .token_paths(paths);
        Manifest::oauth2(
            "hubspot",
            "HubSpot",
            "Contacts, companies, deals and tickets in HubSpot CRM.",
            oauth,
        )
        .version("0.1.0")
        .category("crm")
        .icon(ICON)
        .docs_url("https://developers.hubspot.com/docs/api/oauth-quickstart-guide")
        .api_base_url(&format!("{BASE}/"))
        .egress_host("api.hubapi.com")
        .scope(Scope::required(
            "oauth",
            "Basic OAuth access (required by HubSpot)",
        ))
        .scope(Scope::required(
            "crm.objects.contacts.read",
            "Read contacts",
        ))
        .scope(
            Scope::optional("crm.objects.contacts.write", "Create and update contacts")
                .in_param("optional_scope"),
        )
        .scope(
            Scope::optional("crm.objects.companies.read", "Read companies")
                .in_param("optional_scope"),
        )
        .scope(Scope::optional("crm.objects.deals.read", "Read deals").in_param("optional_scope"))
        .scope(
            Scope::optional("crm.objects.deals.write", "Create and update deals")
                .in_param("optional_scope"),
        )
        .scope(
            Scope::optional("crm.objects.owners.read", "Read record owners")
                .in_param("optional_scope"),
        )
        .scope(Scope::optional("tickets", "Read and manage tickets").in_param("optional_scope"))
        .config_schema_text(CONFIG_SCHEMA)
    }

    fn lookup_account(_ctx: &CallContext) -> Result<Account, Error> {
        let r = http::post("oauth/2026-03/token/introspect")
            .anonymous()
            .form(&[("token_type_hint", "access_token")])
            .form_secret("client_id", SecretRef::ClientId)
            .form_secret("client_secret", SecretRef::ClientSecret)
            .form_secret("token", SecretRef::AccessToken)
            .send()?;
        let body: Value = r.json().unwrap_or(Value::Null);
        if let Some(e) = hubspot_error(r.status, &body) {
            return Err(e);
        }
        if body["active"].as_bool() == Some(false) {
            return Err(Error::unauthorized(
                "HubSpot says the access token is no longer active",
            ));
        }
        let hub_id = match &body["hub_id"] {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => {
                return Err(Error::provider(
                    "HubSpot's introspection answer has no hub_id",
                ));
            }
        };
        let name = body["hub_domain"].as_str().unwrap_or(&hub_id).to_owned();
        let mut account = Account::new(hub_id, name);
        if let Some(user) = body["user"].as_str() {
            account = account.email(user);
        }
        Ok(account)
    }

    fn parse_token_response(status: u16, body: &[u8]) -> Option<Result<TokenSet, Error>> {
        // Standard answers are read by the host; only the older {status, message} errors need us.
        let v: Value = serde_json::from_slice(body).ok()?;
        if v.get("error").is_some() || v.get("access_token").is_some() {
            return None;
        }
        hubspot_error(status, &v).map(Err)
    }
}

/// HubSpot errors: `{status, message}` (older) or `{error, error_description}` (newer).
fn hubspot_error(status: u16, body: &Value) -> Option<Error> {
    let code = body["status"].as_str().or_else(|| body["error"].as_str());
    if (200..300).contains(&status)
        && body.get("status").is_none_or(|s| s == "ok" || s.is_null())
        && body.get("error").is_none()
    {
        return None;
    }
    let code = code.unwrap_or("error");
    let message = body["message"]
        .as_str()
        .or_else(|| body["error_description"].as_str())
        .unwrap_or("");
    Some(match (status, code) {
        (_, "BAD_REFRESH_TOKEN" | "invalid_grant") => Error::revoked(format!(
            "HubSpot no longer accepts this authorization ({code}); reconnect the HubSpot account"
        )),
        (401, _) | (_, "EXPIRED_AUTHENTICATION" | "invalid_token") => {
            Error::unauthorized(format!("HubSpot rejected the token ({code})"))
        }
        (403, _) | (_, "MISSING_SCOPES") => {
            Error::insufficient_scope(format!("HubSpot refused access ({code}): {message}"))
        }
        (429, _) => Error::rate_limited(None),
        (500..=599, _) => Error::unavailable(format!("HubSpot is having trouble (HTTP {status})")),
        _ => Error::provider(format!(
            "HubSpot answered {code}{}",
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        )),
    })
}

export_connector!(HubSpot);
