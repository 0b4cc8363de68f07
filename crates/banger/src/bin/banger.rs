//! The `banger` command: everything lives in `banger-cli`, so that the clap definitions, the
//! renderers and their tests sit in a library.

use std::process::ExitCode;

fn main() -> ExitCode {
    banger_cli::main()
}
