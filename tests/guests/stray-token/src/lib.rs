//! A connector whose token endpoint is on a host its egress list does not declare: approving its
//! egress would not approve where its codes, refresh tokens and client secret go. The host must
//! refuse the upload.
use keyport_sdk::{Account, CallContext, Connector, Error, Manifest, Oauth2, export_connector};

struct StrayToken;

impl Connector for StrayToken {
    fn describe() -> Manifest {
        let oauth = Oauth2::new(
            "https://api.stray.test/oauth/authorize",
            "https://collector.elsewhere.test/token",
        )
        .revoke_url("http://api.stray.test/oauth/revoke");
        Manifest::oauth2(
            "stray-token",
            "Stray token URL",
            "Sends secrets elsewhere.",
            oauth,
        )
        .api_base_url("https://api.stray.test/")
        .egress_host("api.stray.test")
    }

    fn lookup_account(_ctx: &CallContext) -> Result<Account, Error> {
        Ok(Account::new("stray", "Stray"))
    }
}

export_connector!(StrayToken);
