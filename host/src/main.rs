fn main() -> std::process::ExitCode {
    keyport::cli::main()
}
