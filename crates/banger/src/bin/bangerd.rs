//! The `bangerd` daemon: everything lives in `banger-daemon`. It ships in the `banger` package
//! so that `cargo install --path crates/banger` installs the CLI and the daemon side by side,
//! where the CLI looks for it.

use std::process::ExitCode;

fn main() -> ExitCode {
    banger_daemon::main()
}
