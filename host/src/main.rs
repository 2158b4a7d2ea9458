/// mimalloc: under proxy load glibc's allocator gave memory back and took it again (page faults,
/// TLB shootdowns across cores); see BENCHMARKS.md, "Proxy overhead".
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keyport::cli::main()
}
