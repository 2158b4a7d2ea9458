// The `swap-test` connector, built twice (`swap-v1`, `swap-v2`) with a different `VERSION` and
// `EXTRA_HOSTS`. It sends `X-Connector-Version` on every API call, so a test can see through the
// proxy which version served a request, and it classifies answers, so every proxied call runs the
// component's code (old or new) while it is swapped.
use keyport_sdk::{
    Account, CallContext, Classification, Connector, Error, Manifest, ResponseView,
    export_connector, http,
};
use serde_json::Value;

struct Swap;

impl Connector for Swap {
    fn describe() -> Manifest {
        let mut m = Manifest::api_key("swap-test", "Swap test", "Hot-loading tests.")
            .version(VERSION)
            .api_base_url("https://api.swap.test/")
            .api_header("x-connector-version", VERSION)
            .egress_host("api.swap.test")
            .classifies_responses();
        for h in EXTRA_HOSTS {
            m = m.egress_host(h);
        }
        m
    }

    fn lookup_account(_ctx: &CallContext) -> Result<Account, Error> {
        let me: Value = http::get("me").send()?.error_for_status()?.json()?;
        Ok(Account::new(
            me["id"].as_str().unwrap_or("swap-user"),
            format!("Swap user (v{VERSION})"),
        ))
    }

    /// An answer saying `{"error": "revoked"}` means the key was revoked.
    fn classify_response(response: &ResponseView) -> Option<Classification> {
        let body: Value = response.json()?;
        (body["error"] == "revoked").then(|| {
            Classification::Failure(Error::revoked("the provider revoked the key").into())
        })
    }
}

export_connector!(Swap);
