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
    #[arg(short = 'c', value_name = "CONFIG", default_value = DEFAULT_CONFIG, global = true)]
    pub(crate) config: PathBuf,

    /// Path to the secure file (ZooKeeper TLS, diskimage env-vars, api-token).
    #[arg(short = 's', value_name = "SECURE", global = true)]
    pub(crate) secure: Option<PathBuf>,

    /// Directory of the embedded store, used when the config names no
    /// ZooKeeper (default /var/lib/nodepool).
    #[arg(long, value_name = "DIR", env = "NODEPOOL_STATE_DIR", global = true)]
    pub(crate) state_dir: Option<PathBuf>,

    /// Show DEBUG level logging.
    #[arg(long, global = true)]
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
    /// List nodes.
    List {
        /// Output more detailed info.
        #[arg(long)]
        detail: bool,
        /// Print upstream's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Place a node in the DELETE state (or delete it now).
    Delete {
        /// Node id.
        id: String,
        /// Delete the node in the foreground: its instance, then its record.
        #[arg(long)]
        now: bool,
        /// Print upstream's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Place a node in the HOLD state, e.g. for running maintenance tasks.
    Hold {
        /// Node id.
        id: String,
        /// Why it is held (stored as the node's comment).
        #[arg(long)]
        reason: Option<String>,
        /// Print upstream's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the current node requests.
    RequestList {
        /// Print upstream's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the labels the running launchers serve.
    LabelList {
        /// Print upstream's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a provider's data in the store (uploads and nodes).
    Info {
        /// Provider name.
        provider: String,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Erase a provider's data from the store (not from the cloud).
    Erase {
        /// Provider name.
        provider: String,
        /// Bypass the warning prompt.
        #[arg(long)]
        force: bool,
    },
    /// Run the launcher daemon (and its web app) in the foreground.
    ///
    /// Stops cleanly on SIGINT or SIGTERM, re-reads the configuration when
    /// the file changes, and logs what every pool is doing on SIGUSR2.
    Launcher,
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
