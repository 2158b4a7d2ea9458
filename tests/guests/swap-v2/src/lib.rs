//! Version 2 of the `swap-test` connector: asks for one more egress host than version 1.
const VERSION: &str = "2.0.0";
const EXTRA_HOSTS: &[&str] = &["cdn.swap.test"];
include!("../../swap.rs");
