#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyport::fuzzing::token_response(data));
