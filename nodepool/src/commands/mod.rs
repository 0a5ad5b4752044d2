//! One module per command group; each returns the process exit code.

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub(crate) mod config;
pub(crate) mod images;
pub(crate) mod nodes;
pub(crate) mod out;
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
        Command::Builder {
            upload_workers,
            build_workers,
        } => crate::daemon::builder::run(crate::daemon::builder::BuilderOptions {
            config: cli.config.clone(),
            secure: cli.secure.clone(),
            state_dir: crate::daemon::launcher::state_dir(cli.state_dir.as_deref()),
            reload_interval: std::time::Duration::from_secs(2),
            upload_workers: *upload_workers,
            build_workers: *build_workers,
        }),
        Command::ImageBuild { image } => images::image_build(&session(cli), image.clone()),
        Command::DibImageList { json } => {
            images::dib_image_list(&session(cli), Format::from_flag(*json))
        }
        Command::ImageList { json } => images::image_list(&session(cli), Format::from_flag(*json)),
        Command::ImageStatus { json } => {
            images::image_status(&session(cli), Format::from_flag(*json))
        }
        Command::DibImageDelete { id } => images::dib_image_delete(&session(cli), id.clone()),
        Command::ImageDelete {
            provider,
            image,
            build_id,
            upload_id,
        } => images::image_delete(
            &session(cli),
            images::UploadRef {
                provider: provider.clone(),
                image: image.clone(),
                build_id: build_id.clone(),
                upload_id: upload_id.clone(),
            },
        ),
        Command::ImageValidate { image, provider } => {
            images::image_validate(&session(cli), image.clone(), provider.clone())
        }
        Command::ImagePause { image } => images::set_paused(&session(cli), image.clone(), true),
        Command::ImageUnpause { image } => images::set_paused(&session(cli), image.clone(), false),
        Command::AlienImageList { provider, json } => {
            images::alien_image_list(&session(cli), provider.clone(), Format::from_flag(*json))
        }
    }
}
