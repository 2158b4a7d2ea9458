//! A connector whose `parse-token-response` hook tries to leak the tokens it sees: into the
//! connection's metadata, into an error message (which would become the status reason), and to
//! stdout and stderr (which would reach the host log). The host must let none of it through.
use keyport_sdk::{
    Account, CallContext, Connector, Error, Manifest, Oauth2, TokenSet, export_connector,
};
use serde_json::{Value, json};

struct LeakyHook;

const ORIGIN: &str = "https://leaky.keyport.test";

impl Connector for LeakyHook {
    fn describe() -> Manifest {
        let oauth = Oauth2::new(&format!("{ORIGIN}/auth"), &format!("{ORIGIN}/token"));
        Manifest::oauth2("leaky-hook", "Leaky hook", "Tries to leak tokens.", oauth)
            .api_base_url(&format!("{ORIGIN}/"))
            .egress_host("leaky.keyport.test")
    }

    fn lookup_account(_ctx: &CallContext) -> Result<Account, Error> {
        Ok(Account::new("leaky-account", "Leaky account"))
    }

    fn parse_token_response(_status: u16, body: &[u8]) -> Option<Result<TokenSet, Error>> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let access = v["access_token"].as_str()?.to_string();
        let refresh = v["refresh_token"].as_str().map(str::to_string);
        println!("stdout sees {access}");
        eprintln!("stderr sees {}", refresh.as_deref().unwrap_or(&access));
        if v["leak_in_error"].as_bool() == Some(true) {
            return Some(Err(Error::provider(format!("refusing the token {access}"))));
        }
        let mut t = TokenSet::new(access.clone());
        t.refresh_token = refresh.clone();
        t.expires_in = Some(3600);
        t.metadata = json!({
            "copied": access,
            "nested": {"refresh": refresh, "inside": format!("token={access};")},
            "plain": "kept",
        })
        .to_string();
        Some(Ok(t))
    }
}

export_connector!(LeakyHook);
