//! A connector built against the frozen `keyport:connector@0.1.0` contract (`wit/v0.1.0`) with
//! wit-bindgen directly, not through the SDK (which follows the newest contract). Tests prove the
//! host keeps loading it after newer contract versions are added: every export and both imports
//! (`http`, `log`) are exercised.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "connector" });

use keyport::connector::http::{self, Method, Request};
use keyport::connector::log::{self, Level};
use keyport::connector::types::*;

struct Legacy;

fn manifest() -> Manifest {
    Manifest {
        id: "legacy-test".into(),
        display_name: "Legacy contract test".into(),
        version: "0.1.0".into(),
        description: "Built against keyport:connector@0.1.0.".into(),
        icon: String::new(),
        docs_url: None,
        auth: AuthScheme::ApiKey(ApiKey {
            label: "Legacy key".into(),
            help: "Any key the fake provider accepts.".into(),
        }),
        credential: CredentialPlacement::Header(("X-Legacy-Key".into(), String::new())),
        scopes: vec![],
        api_base_url: "https://api.legacy.test/".into(),
        api_headers: vec![("x-contract".into(), "0.1.0".into())],
        egress_hosts: vec!["api.legacy.test".into()],
        config_schema:
            r#"{"type":"object","properties":{"team":{"type":"string","default":"core"}}}"#.into(),
        configurable: false,
        classifies_responses: true,
    }
}

impl Guest for Legacy {
    fn describe() -> Manifest {
        manifest()
    }

    fn lookup_account(ctx: CallContext) -> Result<Account, ConnectorError> {
        log::log(Level::Info, "legacy lookup");
        let r = http::send(&Request {
            method: Method::Get,
            url: "me".into(),
            headers: vec![],
            body: None,
            authenticate: true,
            form_secrets: vec![],
        })
        .map_err(|e| ConnectorError {
            kind: ErrorKind::Unavailable,
            message: format!("{e:?}"),
            retry_after: None,
        })?;
        if r.status != 200 {
            return Err(ConnectorError {
                kind: ErrorKind::Unauthorized,
                message: format!("the key was rejected (HTTP {})", r.status),
                retry_after: None,
            });
        }
        let me: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let config: serde_json::Value = serde_json::from_str(&ctx.config).unwrap_or_default();
        Ok(Account {
            external_id: me["id"].as_str().unwrap_or("?").into(),
            display_name: format!(
                "{} ({})",
                me["id"].as_str().unwrap_or("?"),
                config["team"].as_str().unwrap_or("?")
            ),
            email: None,
        })
    }

    fn validate_config(config: String) -> Vec<FieldError> {
        let config: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
        if config["team"] == "forbidden" {
            return vec![FieldError {
                path: "/team".into(),
                message: "this team is not allowed".into(),
            }];
        }
        vec![]
    }

    fn configure(_definition: String) -> Result<Manifest, Vec<FieldError>> {
        Err(vec![FieldError {
            path: String::new(),
            message: "takes no definition".into(),
        }])
    }

    fn parse_token_response(
        _status: u16,
        _body: Vec<u8>,
    ) -> Option<Result<TokenSet, ConnectorError>> {
        None
    }

    fn classify_response(response: ResponseView) -> Option<Classification> {
        let v: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
        (v["ok"] == false).then(|| {
            Classification::Failure(ConnectorError {
                kind: ErrorKind::Revoked,
                message: "account inactive".into(),
                retry_after: None,
            })
        })
    }
}

export!(Legacy);
