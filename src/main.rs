//! The `mamori` binary: parse the command line, run the command, print the
//! whole error chain and choose the exit code. Everything else is in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    mamori::cli::main()
}
