//! Avoma, with an API key.
//!
//! Quirks: the key goes as a Bearer token; there is no "me" endpoint, so the key is verified with
//! `GET /v1/users/` (a bare JSON array, trailing slash kept) and the connection is named after
//! what the user typed, else the users' email domain; a bad key answers
//! `401 {"detail": "Invalid Token"}`.

use keyport_sdk::{Account, CallContext, Connector, Error, Manifest, export_connector, http};
use serde_json::Value;

struct Avoma;

const ICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#5b3df5"/><path fill="#fff" d="M16 7 7 25h4.2l1.8-3.8h6l1.8 3.8H25L16 7zm-1.6 11.2L16 14l1.6 4.2h-3.2z"/></svg>"##;

const CONFIG_SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "default_page_size": {
      "type": "integer", "title": "Page size", "minimum": 1, "maximum": 100, "default": 50,
      "description": "How many meetings list calls return per page."
    }
  }
}"#;

impl Connector for Avoma {
    fn describe() -> Manifest {
        Manifest::api_key(
            "avoma",
            "Avoma",
            "Meeting recordings, transcripts and notes from Avoma.",
        )
        .version("0.1.0")
        .category("meetings")
        .icon(ICON)
        .docs_url("https://dev694.avoma.com/")
        .api_key_form(
            "API key",
            "In Avoma: Settings → Integrations → API, then Generate API key.",
        )
        .api_base_url("https://api.avoma.com/v1/")
        .egress_host("api.avoma.com")
        .config_schema_text(CONFIG_SCHEMA)
    }

    fn lookup_account(ctx: &CallContext) -> Result<Account, Error> {
        let r = http::get("users/").send()?;
        if r.status == 401 || r.status == 403 {
            let detail = r
                .json::<Value>()
                .ok()
                .and_then(|v| v["detail"].as_str().map(str::to_owned));
            return Err(Error::unauthorized(format!(
                "the API key was rejected by Avoma ({}); create a new key in Avoma and paste it again",
                detail.as_deref().unwrap_or("HTTP 401")
            )));
        }
        let users: Value = r.error_for_status()?.json()?;
        let users = users
            .as_array()
            .ok_or_else(|| Error::provider("Avoma's users answer is not a list"))?;
        let domain = users
            .iter()
            .filter_map(|u| u["email"].as_str())
            .find_map(|e| e.split_once('@').map(|(_, d)| d.to_lowercase()));
        let chosen = ctx.metadata()["display_name"]
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let name = chosen
            .or_else(|| domain.clone())
            .unwrap_or_else(|| "Avoma".to_owned());
        Ok(Account::new(
            domain.unwrap_or_else(|| "avoma".to_owned()),
            name,
        ))
    }
}

export_connector!(Avoma);
