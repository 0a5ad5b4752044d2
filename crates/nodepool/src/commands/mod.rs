//! One module per command group; each returns the process exit code.

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub(crate) mod config;
pub(crate) mod nodes;
pub(crate) mod session;

use nodes::Format;

fn session(cli: &Cli) -> session::Session {
    session::Session {
        config: cli.config.clone(),
        secure: cli.secure.clone(),
        state_dir: crate::daemon::launcher::state_dir(cli.state_dir.as_deref()),
    }
}

/// Run the command the command line names.
pub(crate) fn run(cli: &Cli) -> ExitCode {
    match &cli.command {
        Command::ConfigValidate => config::validate(cli),
        Command::List { detail, json } => {
            nodes::list(&session(cli), *detail, Format::from_flag(*json))
        }
        Command::Delete { id, now, json } => {
            nodes::delete(&session(cli), id.clone(), *now, Format::from_flag(*json))
        }
        Command::Hold { id, reason, json } => nodes::hold(
            &session(cli),
            id.clone(),
            reason.clone(),
            Format::from_flag(*json),
        ),
        Command::RequestList { json } => {
            nodes::request_list(&session(cli), Format::from_flag(*json))
        }
        Command::LabelList { json } => nodes::label_list(&session(cli), Format::from_flag(*json)),
        Command::Info { provider, json } => {
            nodes::info(&session(cli), provider.clone(), Format::from_flag(*json))
        }
        Command::Erase { provider, force } => nodes::erase(&session(cli), provider.clone(), *force),
        Command::Launcher => {
            crate::daemon::launcher::run(crate::daemon::launcher::LauncherOptions {
                config: cli.config.clone(),
                secure: cli.secure.clone(),
                state_dir: crate::daemon::launcher::state_dir(cli.state_dir.as_deref()),
                reload_interval: std::time::Duration::from_secs(2),
            })
        }
    }
}
