//! Slack, through the OAuth 2 "v2" flow.
//!
//! Quirks this connector absorbs:
//! - errors arrive as HTTP 200 with `{"ok": false, "error": "…"}`, from the token endpoint and
//!   from every API method;
//! - bot and user scopes travel in two authorize parameters (`scope`, `user_scope`), both
//!   comma-separated, and Slack does not support PKCE;
//! - a user-scope-only install has no top-level `access_token`: the token is under `authed_user`;
//! - token rotation is opt-in per app: with it, 12-hour tokens and an `xoxe-` refresh token;
//!   without it, tokens never expire;
//! - the account is `auth.test`: the team's name, and the enterprise id for org-wide installs.

use keyport_sdk::{
    Account, CallContext, Classification, Connector, CredentialPlacement, Error, FieldError,
    Manifest, Oauth2, ResponseView, Scope, TokenSet, export_connector, http,
};
use serde_json::{Value, json};

struct Slack;

const ICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 54 54"><path fill="#36C5F0" d="M19.7 0a5.4 5.4 0 1 0 0 10.8h5.4V5.4A5.4 5.4 0 0 0 19.7 0m0 14.4H5.4a5.4 5.4 0 1 0 0 10.8h14.3a5.4 5.4 0 1 0 0-10.8"/><path fill="#2EB67D" d="M54 19.7a5.4 5.4 0 1 0-10.8 0v5.4h5.4a5.4 5.4 0 0 0 5.4-5.4m-14.4 0V5.4a5.4 5.4 0 1 0-10.8 0v14.3a5.4 5.4 0 1 0 10.8 0"/><path fill="#ECB22E" d="M34.3 54a5.4 5.4 0 1 0 0-10.8h-5.4v5.4a5.4 5.4 0 0 0 5.4 5.4m0-14.4h14.3a5.4 5.4 0 1 0 0-10.8H34.3a5.4 5.4 0 1 0 0 10.8"/><path fill="#E01E5A" d="M0 34.3a5.4 5.4 0 1 0 10.8 0v-5.4H5.4A5.4 5.4 0 0 0 0 34.3m14.4 0v14.3a5.4 5.4 0 1 0 10.8 0V34.3a5.4 5.4 0 1 0-10.8 0"/></svg>"##;

const CONFIG_SCHEMA: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "default_channel": {
      "type": "string",
      "title": "Default channel",
      "description": "Where messages go when a workflow names no channel: #name or a channel ID (C…).",
      "default": "#general",
      "maxLength": 80
    },
    "posting_username": {
      "type": "string",
      "title": "Posting username",
      "description": "Name shown on posted messages (needs chat:write.customize). Empty: the app's name.",
      "default": "",
      "maxLength": 80
    }
  }
}"##;

impl Connector for Slack {
    fn describe() -> Manifest {
        let oauth = Oauth2::new(
            "https://slack.com/oauth/v2/authorize",
            "https://slack.com/api/oauth.v2.access",
        )
        .revoke_url("https://slack.com/api/auth.revoke")
        .scope_separator(",")
        .without_pkce();
        Manifest::oauth2(
            "slack",
            "Slack",
            "Post messages, read channels and look up people in a Slack workspace.",
            oauth,
        )
        .version("0.1.0")
        .category("communication")
        .icon(ICON)
        .docs_url("https://api.slack.com/authentication/oauth-v2")
        .credential(CredentialPlacement::Bearer)
        .api_base_url("https://slack.com/api/")
        .egress_host("slack.com")
        .classifies_responses()
        .scope(Scope::required("chat:write", "Post messages as the app"))
        .scope(Scope::required(
            "channels:read",
            "List public channels and their basic info",
        ))
        .scope(Scope::required(
            "team:read",
            "Read the workspace's name, domain and icon",
        ))
        .scope(Scope::optional(
            "chat:write.customize",
            "Post with a custom username and avatar",
        ))
        .scope(Scope::optional(
            "groups:read",
            "List private channels the app was added to",
        ))
        .scope(Scope::optional(
            "users:read",
            "List people in the workspace",
        ))
        .scope(Scope::optional(
            "users:read.email",
            "Read people's email addresses",
        ))
        .scope(Scope::optional(
            "channels:history",
            "Read messages in public channels",
        ))
        .scope(
            Scope::optional(
                "search:read",
                "Search messages and files as the installing user",
            )
            .in_param("user_scope"),
        )
        .config_schema_text(CONFIG_SCHEMA)
    }

    fn lookup_account(_ctx: &CallContext) -> Result<Account, Error> {
        let body: Value = http::post("auth.test").send()?.error_for_status()?.json()?;
        check_ok(&body)?;
        let team = body["team"].as_str().unwrap_or_default();
        let team_id = body["team_id"].as_str().unwrap_or_default();
        let enterprise_id = body["enterprise_id"].as_str().filter(|s| !s.is_empty());
        let org_install = body["is_enterprise_install"].as_bool().unwrap_or(false);
        let external_id = match enterprise_id {
            Some(e) if org_install => e,
            _ => team_id,
        };
        if external_id.is_empty() {
            return Err(Error::provider("Slack's auth.test answer has no team_id"));
        }
        let name = if team.is_empty() { external_id } else { team };
        Ok(Account::new(external_id, name))
    }

    fn validate_config(config: &Value) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(channel) = config["default_channel"].as_str()
            && !valid_channel(channel)
        {
            errors.push(FieldError::new(
                    "/default_channel",
                    "Use #channel-name (lower case, digits, - _ .) or a channel ID such as C0123456789.",
                ));
        }
        errors
    }

    fn parse_token_response(_status: u16, body: &[u8]) -> Option<Result<TokenSet, Error>> {
        Some(parse_token(body))
    }

    fn classify_response(response: &ResponseView) -> Option<Classification> {
        if response.status != 200 {
            return None;
        }
        let body = response.json()?;
        match check_ok(&body) {
            Ok(()) => Some(Classification::Ok),
            Err(e) => Some(Classification::Failure(e.into())),
        }
    }
}

/// `#name` or a conversation ID (C…, G…, D…).
fn valid_channel(channel: &str) -> bool {
    if let Some(name) = channel.strip_prefix('#') {
        return !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    }
    channel.len() >= 9
        && matches!(channel.as_bytes()[0], b'C' | b'G' | b'D')
        && channel
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Slack answers HTTP 200 with `ok: false` for errors; map its codes to kinds.
fn check_ok(body: &Value) -> Result<(), Error> {
    if body["ok"].as_bool() == Some(true) {
        return Ok(());
    }
    let code = body["error"].as_str().unwrap_or("unknown_error");
    Err(match code {
        "invalid_auth" | "not_authed" | "token_expired" => {
            Error::unauthorized(format!("Slack rejected the token ({code})"))
        }
        "token_revoked"
        | "account_inactive"
        | "invalid_refresh_token"
        | "app_uninstalled"
        | "org_login_required" => Error::revoked(format!(
            "Slack says the authorization is no longer valid ({code}); reconnect the workspace"
        )),
        "missing_scope" => {
            let needed = body["needed"].as_str().unwrap_or("?");
            Error::insufficient_scope(format!(
                "Slack needs the scope {needed}; reconnect and grant it"
            ))
        }
        "ratelimited" => Error::rate_limited(None),
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
            Error::unavailable(format!("Slack is having trouble ({code}); try again later"))
        }
        "invalid_code" | "code_already_used" => Error::provider(format!(
            "Slack rejected the authorization code ({code}); start the connection again"
        )),
        "bad_redirect_uri" => Error::provider(
            "Slack rejected the redirect URI (bad_redirect_uri); add keyport's callback URL to the Slack app's Redirect URLs",
        ),
        "invalid_client_id" | "bad_client_secret" | "invalid_client" => Error::provider(format!(
            "Slack rejected the app credentials ({code}); check the client id and secret in the provider app settings"
        )),
        other => Error::provider(format!("Slack answered with an error ({other})")),
    })
}

fn parse_token(body: &[u8]) -> Result<TokenSet, Error> {
    let v: Value = serde_json::from_slice(body)?;
    check_ok(&v)?;
    let user = &v["authed_user"];
    // Bot token at the top; a user-scope-only install has it under `authed_user`.
    let (token, src) = match v["access_token"].as_str().filter(|s| !s.is_empty()) {
        Some(t) => (t, &v),
        None => match user["access_token"].as_str().filter(|s| !s.is_empty()) {
            Some(t) => (t, user),
            None => return Err(Error::provider("Slack's token answer has no access token")),
        },
    };
    let mut set = TokenSet::new(token);
    set.token_type = src["token_type"].as_str().map(str::to_owned);
    set.refresh_token = src["refresh_token"].as_str().map(str::to_owned);
    set.expires_in = src["expires_in"].as_u64();
    set.scopes = src["scope"].as_str().map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let mut metadata = json!({
        "team_id": v["team"]["id"],
        "team_name": v["team"]["name"],
        "app_id": v["app_id"],
        "bot_user_id": v["bot_user_id"],
        "authed_user_id": user["id"],
        "is_enterprise_install": v["is_enterprise_install"],
        "enterprise_id": v["enterprise"]["id"],
        "token_owner": if std::ptr::eq(src, &v) { "bot" } else { "user" },
    });
    if let Some(user_scope) = user["scope"].as_str() {
        metadata["user_scopes"] = Value::String(user_scope.into());
    }
    if let Some(m) = metadata.as_object_mut() {
        m.retain(|_, v| !v.is_null())
    }
    set.metadata = metadata.to_string();
    Ok(set)
}

export_connector!(Slack);
