//! One module per command group; each returns the process exit code.

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub(crate) mod config;

/// Run the command the command line names.
pub(crate) fn run(cli: &Cli) -> ExitCode {
    match cli.command {
        Command::ConfigValidate => config::validate(cli),
    }
}
