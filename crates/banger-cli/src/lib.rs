//! `banger`, the command line of banger: a client of bangerd's API and nothing else. It parses
//! the command line (`cli`), checks values with the shared rules before any round trip (`vm`,
//! `image`), finds, starts and replaces bangerd as needed (`daemon`), follows long operations
//! (`operation`), renders results as text or JSON (`output`), maps every failure to a
//! stable exit code (`exit`), and runs the terminal UI (`tui`).

pub mod cli;
pub mod cp;
pub mod daemon;
pub mod exec;
pub mod exit;
pub mod guest;
pub mod host;
pub mod image;
pub mod operation;
pub mod output;
pub mod pool;
pub mod snapshot;
pub mod tui;
pub mod vm;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command, OutputFormat};
use crate::exit::{Exit, Failure};

/// Runs `banger` with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors exit 2; `--help` and `--version` come this way too and exit 0.
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return fail(
                &Failure::internal(format!("cannot set up banger's runtime: {e}")),
                cli.output,
            );
        }
    };
    if let Command::Vm(command @ (cli::VmCommand::Ssh { .. } | cli::VmCommand::Exec { .. })) =
        &cli.command
    {
        return match runtime.block_on(guest::run_remote(command)) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(failure) => fail(&failure, cli.output),
        };
    }
    match runtime.block_on(run(&cli)) {
        Ok(()) => Exit::Ok.into(),
        Err(failure) => fail(&failure, cli.output),
    }
}

fn fail(failure: &Failure, format: OutputFormat) -> ExitCode {
    output::eprint(&output::error(&failure.error, format));
    failure.exit.into()
}

/// Runs one parsed command.
pub async fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Vm(command) => vm::run(command, cli.output).await,
        Command::Image(command) => image::run(command, cli.output).await,
        Command::Snapshot(command) => snapshot::run(command, cli.output).await,
        Command::Pool(command) => pool::run(command, cli.output).await,
        Command::Daemon(command) => daemon::run(command, cli.output).await,
        Command::Tui => tui::run().await,
        Command::Doctor => host::doctor(cli.output).await,
        Command::Web => host::web(cli.output).await,
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "banger", &mut out);
            output::print(&String::from_utf8_lossy(&out));
            Ok(())
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(|e| Failure::internal(format!("cannot render the man page: {e}")))?;
            output::print(&String::from_utf8_lossy(&out));
            Ok(())
        }
    }
}
