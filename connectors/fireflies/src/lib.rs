//! Fireflies.ai, with an API key, over GraphQL.
//!
//! Quirks: one endpoint, `POST /graphql`; failures arrive in `errors[]`, possibly with HTTP 200, so
//! every answer's body is checked. The account is `{ user { user_id name email } }`.

use keyport_sdk::{
    Account, CallContext, Classification, Connector, Error, Manifest, ResponseView,
    export_connector, http,
};
use serde_json::{Value, json};

struct Fireflies;

const ICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#e8305d"/><path fill="#fff" d="M9 8h14v4H13v3h8v4h-8v5H9z"/></svg>"##;

const CONFIG_SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "transcript_limit": {
      "type": "integer", "title": "Transcripts per query", "minimum": 1, "maximum": 50, "default": 10,
      "description": "How many transcripts list queries fetch."
    }
  }
}"#;

/// Maps a GraphQL `errors[]` to an error kind.
fn graphql_errors(body: &Value) -> Option<Error> {
    let errors = body["errors"].as_array().filter(|e| !e.is_empty())?;
    let first = &errors[0];
    let message = first["message"].as_str().unwrap_or("GraphQL error");
    let code = first["extensions"]["code"].as_str().unwrap_or("");
    let lower = message.to_lowercase();
    Some(
        if code == "UNAUTHENTICATED"
            || code == "invalid_api_key"
            || lower.contains("api key")
            || lower.contains("unauthor")
        {
            Error::unauthorized(format!("the API key was rejected by Fireflies ({message})"))
        } else if code == "TOO_MANY_REQUESTS" || lower.contains("rate limit") {
            Error::rate_limited(first["extensions"]["retryAfter"].as_u64().map(|s| s as u32))
        } else if code == "FORBIDDEN" {
            Error::insufficient_scope(format!("Fireflies refused access ({message})"))
        } else {
            Error::provider(format!("Fireflies answered with an error ({message})"))
        },
    )
}

impl Connector for Fireflies {
    fn describe() -> Manifest {
        Manifest::api_key(
            "fireflies",
            "Fireflies.ai",
            "Meeting transcripts and summaries from Fireflies.ai.",
        )
        .version("0.1.0")
        .category("meetings")
        .icon(ICON)
        .docs_url("https://docs.fireflies.ai/")
        .classifies_responses()
        .api_key_form(
            "API key",
            "In Fireflies: Integrations → Fireflies API, then copy the API key.",
        )
        .api_base_url("https://api.fireflies.ai/")
        .egress_host("api.fireflies.ai")
        .config_schema_text(CONFIG_SCHEMA)
    }

    fn lookup_account(_ctx: &CallContext) -> Result<Account, Error> {
        let r = http::post("graphql")
            .json(&json!({"query": "{ user { user_id name email } }"}))
            .send()?;
        let body: Value = r.json().unwrap_or(Value::Null);
        if let Some(e) = graphql_errors(&body) {
            return Err(e);
        }
        let r = r.error_for_status()?;
        let _ = r;
        let user = &body["data"]["user"];
        let id = user["user_id"]
            .as_str()
            .ok_or_else(|| Error::provider("Fireflies' answer has no user"))?;
        let mut account = Account::new(id, user["name"].as_str().unwrap_or(id));
        if let Some(email) = user["email"].as_str() {
            account = account.email(email);
        }
        Ok(account)
    }

    fn classify_response(response: &ResponseView) -> Option<Classification> {
        let body = response.json()?;
        match graphql_errors(&body) {
            Some(e) => Some(Classification::Failure(e.into())),
            None if response.status == 200 => Some(Classification::Ok),
            None => None,
        }
    }
}

export_connector!(Fireflies);
