//! `config-validate`: load the configuration as the daemons would and report
//! every error.

use std::io::Write;
use std::process::ExitCode;

use nodepool_core::config::{self, Config, ConfigErrors};

use crate::cli::Cli;

/// Load the configuration (and secure file) with the built-in drivers.
pub(crate) fn load(cli: &Cli) -> Result<Config, ConfigErrors> {
    let registry = nodepool_drivers::registry::builtin();
    config::load(&cli.config, cli.secure.as_deref(), &registry)
}

/// Validate the configuration: warnings and the `validating` line go to
/// stderr (as upstream logs them); errors go to stdout, one a line as
/// `file:line:column: path: message`. Exit 0 when valid, 1 when not.
pub(crate) fn validate(cli: &Cli) -> ExitCode {
    eprintln!("validating {}", cli.config.display());
    let (code, warnings) = match load(cli) {
        Ok(config) => (ExitCode::SUCCESS, config.warnings),
        Err(errors) => {
            let mut out = std::io::stdout().lock();
            for e in &errors.errors {
                // A closed stdout is no reason to panic; the exit code tells.
                let _ = writeln!(out, "{e}");
            }
            (ExitCode::FAILURE, errors.warnings)
        }
    };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    code
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::cli::Command;

    fn cli_for(config: &str) -> Cli {
        Cli {
            config: PathBuf::from(config),
            secure: None,
            state_dir: None,
            debug: false,
            command: Command::ConfigValidate,
        }
    }

    #[test]
    fn opendev_shaped_production_config_loads() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/commands/testdata/opendev-shaped.yaml"
        );
        let config = match load(&cli_for(path)) {
            Ok(c) => c,
            Err(e) => panic!("expected the config to load:\n{e}"),
        };
        assert_eq!(config.zookeeper_servers.len(), 3);
        assert_eq!(config.zookeeper_timeout, 60.0);
        assert_eq!(config.build_log_retention, 14);

        // The repeated `rate:` keeps its last value, with a warning.
        let ord = config.provider("rax-ord").expect("rax-ord");
        assert_eq!(ord.rate, 0.001);
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        assert!(
            config.warnings[0].contains("\"rate\" repeated"),
            "{:?}",
            config.warnings
        );

        // Aliases share diskimages and labels across providers.
        let dfw = config.provider("rax-dfw").expect("rax-dfw");
        assert_eq!(ord.diskimages, dfw.diskimages);
        assert_eq!(ord.pools[0].labels, dfw.pools[0].labels);
        assert_eq!(ord.pools[0].max_servers, Some(100));
        let ovh = config.provider("ovh-bhs1").expect("ovh");
        assert!(ovh.diskimages.is_empty());
        assert!(ovh.pools[0].labels.is_empty());

        // Abstract images are not built; inheritance is resolved.
        let names: Vec<&str> = config.diskimages.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ubuntu-jammy",
                "ubuntu-noble",
                "debian-bookworm",
                "centos-9-stream"
            ]
        );
        let noble = config.diskimage("ubuntu-noble").expect("noble");
        assert_eq!(noble.elements.first().map(String::as_str), Some("vm"));
        assert_eq!(
            noble.elements.last().map(String::as_str),
            Some("ubuntu-minimal")
        );
        assert_eq!(noble.release.as_deref(), Some("noble"));
        assert_eq!(noble.formats, ["qcow2", "raw", "vhd"]);
        let keys = noble
            .env_vars
            .get("DIB_DEV_USER_AUTHORIZED_KEYS")
            .expect("keys");
        assert_eq!(keys.lines().count(), 2);
        assert!(keys.ends_with('\n'));
        let bookworm = config.diskimage("debian-bookworm").expect("bookworm");
        assert_eq!(
            bookworm
                .env_vars
                .get("DIB_DEBOOTSTRAP_EXTRA_ARGS")
                .map(String::as_str),
            Some("--no-check-gpg --variant=minbase")
        );
        assert_eq!(
            bookworm
                .env_vars
                .get("DIB_DISTRIBUTION_MIRROR")
                .map(String::as_str),
            Some("http://mirror.dfw.rax.opendev.org/debian")
        );
    }

    #[test]
    fn quickstart_example_has_the_documented_shape() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart.yaml");
        let config = match load(&cli_for(path)) {
            Ok(c) => c,
            Err(e) => panic!("expected the example to load:\n{e}"),
        };
        assert_eq!(config.label("ubuntu-noble").map(|l| l.min_ready), Some(2));
        let p = config.provider("fake-provider").expect("fake-provider");
        assert_eq!(p.driver, "fake");
        assert_eq!(p.pools.len(), 1);
        assert_eq!(p.pools[0].max_servers, Some(20));
    }
}
