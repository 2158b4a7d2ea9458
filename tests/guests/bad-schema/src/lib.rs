//! A connector whose config schema is not a valid JSON Schema (`"type": "strnig"`).
use keyport_sdk::{Account, CallContext, Connector, Error, Manifest, export_connector};

struct BadSchema;

impl Connector for BadSchema {
    fn describe() -> Manifest {
        Manifest::api_key(
            "bad-schema",
            "Bad schema",
            "Declares an invalid config schema.",
        )
        .api_base_url("https://api.example.com/")
        .egress_host("api.example.com")
        .config_schema(serde_json::json!({
            "type": "object",
            "properties": { "channel": { "type": "strnig" } }
        }))
    }

    fn lookup_account(_ctx: &CallContext) -> Result<Account, Error> {
        Ok(Account::new("1", "never"))
    }
}

export_connector!(BadSchema);
