//! A connector whose `describe` traps: uploads of it must be rejected.
use keyport_sdk::{Account, CallContext, Connector, Error, Manifest, export_connector};

struct DescribeTrap;

impl Connector for DescribeTrap {
    fn describe() -> Manifest {
        panic!("describe is broken on purpose")
    }

    fn lookup_account(_ctx: &CallContext) -> Result<Account, Error> {
        Err(Error::provider("unreachable"))
    }
}

export_connector!(DescribeTrap);
