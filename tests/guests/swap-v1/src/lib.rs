//! Version 1 of the `swap-test` connector, for the hot-loading tests (see `../swap.rs`).
const VERSION: &str = "1.0.0";
const EXTRA_HOSTS: &[&str] = &[];
include!("../../swap.rs");
