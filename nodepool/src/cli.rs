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
    /// the file changes, and logs every task (pool workers, request
    /// handlers, launches, deletions, cleanup) and what it waits on on
    /// SIGUSR2.
    Launcher,
    /// Run the builder daemon in the foreground (upstream's
    /// `nodepool-builder`): build diskimages, upload them, clean up.
    ///
    /// Needs `images-dir` in the config. Stops cleanly on SIGINT or SIGTERM
    /// (a running build is stopped and its files removed), re-reads the
    /// configuration when the file changes, and logs every task and what it
    /// waits on on SIGUSR2.
    Builder {
        /// Number of build workers: images built at once (at most 64).
        #[arg(long, value_name = "N", default_value_t = 1)]
        build_workers: usize,
        /// Number of upload workers.
        #[arg(long, value_name = "N", default_value_t = 4)]
        upload_workers: usize,
    },
    /// Build an image using diskimage-builder (ask the builders for a build).
    ImageBuild {
        /// Image name.
        image: String,
    },
    /// List images built with diskimage-builder.
    DibImageList {
        /// Print upstream's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List images uploaded to providers.
    ImageList {
        /// Print upstream's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the paused and manual build status of images.
    ImageStatus {
        /// Print upstream's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a dib built image from disk along with all cloud uploads of
    /// this image.
    DibImageDelete {
        /// Dib image id (`<image>-<build id>`, as `dib-image-list` shows).
        id: String,
    },
    /// Delete an image upload.
    ImageDelete {
        /// Provider name.
        #[arg(long, required = true)]
        provider: String,
        /// Image name.
        #[arg(long, required = true)]
        image: String,
        /// Image build id.
        #[arg(long, required = true)]
        build_id: String,
        /// Image upload id.
        #[arg(long, required = true)]
        upload_id: String,
    },
    /// Validate the newest upload of an image again (ours): it goes back to
    /// `testing`, a launcher boots a node from it and runs the diskimage's
    /// `validation.hook`, and nodes boot from the previous ready upload
    /// until it passes.
    ImageValidate {
        /// Image name.
        image: String,
        /// Only the upload to this provider (default: every provider).
        #[arg(long)]
        provider: Option<String>,
    },
    /// Pause an image: no builds until it is unpaused.
    ImagePause {
        /// Image name.
        image: String,
    },
    /// Unpause an image.
    ImageUnpause {
        /// Image name.
        image: String,
    },
    /// List images not accounted for by nodepool: images in the cloud with
    /// nodepool's metadata that no ready upload in the store knows.
    AlienImageList {
        /// Provider name (default: every provider).
        provider: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
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
    fn image_delete_requires_all_four_ids() {
        let partial = Cli::try_parse_from([
            "nodepool",
            "image-delete",
            "--provider",
            "p",
            "--image",
            "i",
            "--build-id",
            "0000000001",
        ]);
        assert!(partial.is_err());
        let cli = Cli::try_parse_from([
            "nodepool",
            "image-delete",
            "--provider",
            "p",
            "--image",
            "i",
            "--build-id",
            "0000000001",
            "--upload-id",
            "0000000002",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            Command::ImageDelete { ref upload_id, .. } if upload_id == "0000000002"
        ));
    }

    #[test]
    fn alien_image_list_provider_is_optional() {
        let all = Cli::try_parse_from(["nodepool", "alien-image-list"]).expect("parses");
        assert!(matches!(
            all.command,
            Command::AlienImageList {
                provider: None,
                json: false
            }
        ));
        let one = Cli::try_parse_from(["nodepool", "alien-image-list", "cloud1", "--json"])
            .expect("parses");
        assert!(matches!(
            one.command,
            Command::AlienImageList { provider: Some(ref p), json: true } if p == "cloud1"
        ));
    }

    #[test]
    fn builder_takes_global_options_and_upload_workers() {
        let cli = Cli::try_parse_from([
            "nodepool",
            "-c",
            "/tmp/n.yaml",
            "--state-dir",
            "/tmp/state",
            "builder",
            "--upload-workers",
            "2",
        ])
        .expect("parses");
        assert_eq!(cli.state_dir, Some(PathBuf::from("/tmp/state")));
        assert!(matches!(
            cli.command,
            Command::Builder {
                upload_workers: 2,
                build_workers: 1
            }
        ));
    }

    #[test]
    fn missing_command_is_a_usage_error() {
        assert!(Cli::try_parse_from(["nodepool"]).is_err());
    }
}
