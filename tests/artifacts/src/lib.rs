//! Paths of the test guests built from `tests/guests/` for wasm32-wasip2.
include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// Bytes of a test guest.
pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read test guest {path}: {e}"))
}
