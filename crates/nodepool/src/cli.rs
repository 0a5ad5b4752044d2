//! The command line, as upstream's `nodepool` command reads it: global
//! options (`-c`, `-s`, `--debug`) before the command.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Upstream's default configuration file.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/nodepool/nodepool.yaml";

/// Manage a nodepool-rs installation.
#[derive(Debug, Parser)]
#[command(name = "nodepool", version, about)]
pub(crate) struct Cli {
    /// Path to the config file.
    #[arg(short = 'c', value_name = "CONFIG", default_value = DEFAULT_CONFIG)]
    pub(crate) config: PathBuf,

    /// Path to the secure file.
    #[arg(short = 's', value_name = "SECURE")]
    pub(crate) secure: Option<PathBuf>,

    /// Show DEBUG level logging.
    #[arg(long)]
    pub(crate) debug: bool,

    /// The command to run.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands. One module under `commands/` per group.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Validate configuration file.
    ConfigValidate,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_options_come_before_the_command() {
        let cli = Cli::try_parse_from([
            "nodepool",
            "-c",
            "/tmp/n.yaml",
            "-s",
            "/tmp/s.yaml",
            "config-validate",
        ])
        .expect("parses");
        assert_eq!(cli.config, PathBuf::from("/tmp/n.yaml"));
        assert_eq!(cli.secure, Some(PathBuf::from("/tmp/s.yaml")));
        assert!(matches!(cli.command, Command::ConfigValidate));
    }

    #[test]
    fn config_defaults_to_upstream_path() {
        let cli = Cli::try_parse_from(["nodepool", "config-validate"]).expect("parses");
        assert_eq!(cli.config, PathBuf::from(DEFAULT_CONFIG));
        assert_eq!(cli.secure, None);
    }

    #[test]
    fn missing_command_is_a_usage_error() {
        assert!(Cli::try_parse_from(["nodepool"]).is_err());
    }
}
