//! The `nodepool` command: the CLI of nodepool-rs, compatible with upstream
//! nodepool's (`nodepool [-c CONFIG] [-s SECURE] COMMAND`).

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
mod daemon;
mod web;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // Daemons log their work; one-shot commands only warnings and errors.
    let level = match (&cli.command, cli.debug) {
        (_, true) => "debug",
        (cli::Command::Launcher | cli::Command::Builder { .. }, false) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    commands::run(&cli)
}
