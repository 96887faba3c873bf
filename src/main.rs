//! The `nmo` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    nmo::cli::main()
}
