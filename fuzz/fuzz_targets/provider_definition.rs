#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyport::fuzzing::provider_definition(data));
