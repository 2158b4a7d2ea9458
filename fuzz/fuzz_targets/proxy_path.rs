#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyport::fuzzing::proxy_path(data));
