# keyport — convenience recipes. Everything here is plain cargo underneath.

# Start the host on http://127.0.0.1:8080
serve *ARGS:
    cargo run -- serve {{ARGS}}

# Run the whole test suite (what CI runs)
test:
    cargo test

# Formatting and lints, as CI checks them
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

fmt:
    cargo fmt --all
    cargo fmt --all --manifest-path connectors/Cargo.toml
    cargo fmt --all --manifest-path tests/guests/Cargo.toml

# Build the built-in connectors for wasm32-wasip2 (cargo build does this too)
connectors:
    rustup target add wasm32-wasip2
    cargo build --release --target wasm32-wasip2 --manifest-path connectors/Cargo.toml --target-dir target/wasm-guests

# Validate every built-in connector with `keyport connector check`
check-connectors: connectors
    for f in target/wasm-guests/wasm32-wasip2/release/*.wasm; do cargo run -q -- connector check "$f" > /dev/null; done

# Benchmarks (figures go to BENCHMARKS.md)
bench:
    cargo bench -p keyport --bench connector_calls

# Refresh throughput on SQLite and PostgreSQL (N=... just bench-refresh 1000000)
bench-refresh N="1000,10000":
    KEYPORT_BENCH_N={{N}} cargo bench -p keyport --bench refresh_throughput

# Proxy overhead against the upstream called directly and through nginx (apt-get install nginx-light)
bench-proxy:
    cargo bench -p keyport --bench proxy_overhead

# A page of 500 connections through the API, per connection, on SQLite and PostgreSQL
bench-listing N="1000":
    KEYPORT_BENCH_N={{N}} cargo bench -p keyport --bench listing

# Start-up to healthy: warm start against an empty start and the process floor
bench-startup:
    cargo bench -p keyport --bench startup

# Web UI page latency against the JSON API with the same data (N=... just bench-ui 1000)
bench-ui N="100,1000":
    KEYPORT_BENCH_N={{N}} cargo bench -p keyport --bench ui_pages

# Fuzz every target for SECS seconds each (coverage-guided, libFuzzer through cargo-fuzz on the
# stable toolchain; see FUZZING.md). New corpus inputs land in fuzz/corpus/<target>: commit them.
fuzz SECS="600" *TARGETS="proxy_path token_response vault_open webhook_signature manifest provider_definition":
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    for t in {{TARGETS}}; do RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none $t fuzz/corpus/$t -- -max_total_time={{SECS}} -rss_limit_mb=4096 || exit 1; done
