//! An API-key connector for tests: verifies the key with `GET /v1/me` on
//! `https://api.keytest.example`, which tests map to a fake provider.
use keyport_sdk::{
    Account, CallContext, Connector, Error, ErrorKind, Manifest, export_connector, http,
};
use serde_json::Value;

struct ApiKeyTest;

impl Connector for ApiKeyTest {
    fn describe() -> Manifest {
        Manifest::api_key(
            "apikey-test",
            "API key test provider",
            "A fake provider for API-key tests.",
        )
        .api_key_form("API key", "Settings → API → Create key")
        .api_base_url("https://api.keytest.example/v1/")
        .egress_host("api.keytest.example")
        .config_schema(serde_json::json!({
            "type": "object",
            "properties": {"region": {"type": "string", "enum": ["eu", "us"], "default": "eu"}}
        }))
    }

    fn lookup_account(ctx: &CallContext) -> Result<Account, Error> {
        let r = http::get("me").send()?;
        if r.status == 401 {
            let detail: Value = r.json().unwrap_or_default();
            return Err(Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "the API key was rejected ({})",
                    detail["detail"].as_str().unwrap_or("401")
                ),
            ));
        }
        let me: Value = r.error_for_status()?.json()?;
        let chosen = ctx.metadata()["display_name"].as_str().map(str::to_owned);
        let id = me["id"].as_str().unwrap_or_default();
        Ok(Account::new(
            id,
            chosen.unwrap_or_else(|| me["name"].as_str().unwrap_or(id).to_owned()),
        ))
    }
}

export_connector!(ApiKeyTest);
