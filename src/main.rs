//! The `highwater` binary: parse arguments, run, print the error chain, map it to an exit code.

fn main() -> std::process::ExitCode {
    highwater::cli::main()
}
