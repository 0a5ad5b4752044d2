//! The `process` provider configuration and its parser.

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;

use nodepool_core::config::{
    DriverConfig, Item, MapReader, PoolCommon, PoolLabel, ProviderCommon, ProviderConfig,
};

/// Default `cores` of a label.
pub const DEFAULT_CORES: u64 = 1;
/// Default login user written on node records.
pub const DEFAULT_USERNAME: &str = "zuul";

/// A `process` provider's own configuration.
#[doc = include_str!("docs.md")]
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessConfig {
    /// The provider name.
    pub name: String,
    /// `root`: the directory holding the sandboxes (the provider's own
    /// subdirectory is `root/<name>`).
    pub root: PathBuf,
    /// `command`: the argv each sandbox runs (empty: no process).
    pub command: Vec<String>,
    /// `instances`: the quota (`None`: unlimited).
    pub instances: Option<u64>,
    /// `pools`.
    pub pools: Vec<ProcessPool>,
}

/// One pool of a `process` provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessPool {
    /// `name`.
    pub name: String,
    /// `labels`.
    pub labels: Vec<ProcessLabel>,
}

/// One label of a `process` pool.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessLabel {
    /// `name`.
    pub name: String,
    /// `cores` (default 1).
    pub cores: u64,
    /// `ram` in MB (default 0).
    pub ram: u64,
    /// `username` (default "zuul").
    pub username: String,
}

impl ProcessConfig {
    /// The label `label` of pool `pool`.
    pub fn label(&self, pool: &str, label: &str) -> Option<&ProcessLabel> {
        self.pools
            .iter()
            .find(|p| p.name == pool)?
            .labels
            .iter()
            .find(|l| l.name == label)
    }

    /// The directory holding this provider's sandboxes.
    pub fn provider_dir(&self) -> PathBuf {
        self.root.join(&self.name)
    }
}

impl DriverConfig for ProcessConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A non-negative integer, or an error at the value.
fn non_negative(item: &Item<'_>) -> Option<u64> {
    let value = item.as_i64()?;
    match u64::try_from(value) {
        Ok(v) => Some(v),
        Err(_) => {
            item.error(format!("expected a non-negative integer, found {value}"));
            None
        }
    }
}

/// Read a `process` provider. Core has consumed `name`, `driver`,
/// `max-concurrency` and `priority` into `common`, and calls
/// [`MapReader::finish`] on `provider` afterwards; this function finishes
/// every child mapping it opens, so any key nobody read is reported as
/// "unknown key" with its file, line and column.
///
/// Returns `None` only after recording an error (here: a missing or
/// relative `root`).
pub fn parse_process_provider(
    provider: &mut MapReader<'_>,
    common: ProviderCommon,
) -> Option<ProviderConfig> {
    let root = provider.required("root").and_then(|item| {
        let path = PathBuf::from(item.as_str()?);
        if path.is_absolute() {
            Some(path)
        } else {
            item.error(format!(
                "expected an absolute directory, found {:?}",
                path.display()
            ));
            None
        }
    });
    let command = match provider.take("command") {
        Some(item) => match item.as_str_list() {
            Some(argv) if argv.is_empty() => {
                item.error("expected a non-empty list: the program and its arguments");
                Vec::new()
            }
            Some(argv) => argv,
            None => Vec::new(),
        },
        None => Vec::new(),
    };
    let instances = provider.take("instances").and_then(|i| non_negative(&i));
    let launch_retries = provider.i64_or("launch-retries", 3);
    let boot_timeout = provider.f64_or("boot-timeout", 60.0);
    let launch_timeout = provider.f64_or("launch-timeout", 3600.0);

    let mut pools = Vec::new();
    let mut pool_views = Vec::new();
    for mut map in provider.seq_of_maps("pools") {
        let name = map.required_str("name");
        let pool_common = PoolCommon::read(&mut map);
        let mut labels = Vec::new();
        for mut label in map.seq_of_maps("labels") {
            let label_name = label.required_str("name");
            let cores = label
                .take("cores")
                .and_then(|i| non_negative(&i))
                .unwrap_or(DEFAULT_CORES);
            let ram = label
                .take("ram")
                .and_then(|i| non_negative(&i))
                .unwrap_or(0);
            let username = label.str_or("username", DEFAULT_USERNAME);
            label.finish();
            if let Some(name) = label_name {
                labels.push(ProcessLabel {
                    name,
                    cores,
                    ram,
                    username,
                });
            }
        }
        if let Some(name) = name {
            if pools.iter().any(|p: &ProcessPool| p.name == name) {
                map.error(format!("pool {name:?} appears more than once"));
            } else {
                let mut view = pool_common.into_pool(name.clone(), &common);
                view.labels = labels
                    .iter()
                    .map(|l| PoolLabel {
                        name: l.name.clone(),
                        username: Some(l.username.clone()),
                        connection_type: Some("ssh".to_string()),
                        ..PoolLabel::default()
                    })
                    .collect();
                pool_views.push(view);
                pools.push(ProcessPool { name, labels });
            }
        }
        map.finish();
    }

    let typed = Arc::new(ProcessConfig {
        name: common.name.clone(),
        root: root?,
        command,
        instances,
        pools,
    });
    let mut view = common.into_config(typed);
    view.launch_retries = launch_retries;
    view.boot_timeout = boot_timeout;
    view.launch_timeout = launch_timeout;
    view.rate = 0.0;
    view.pools = pool_views;
    Some(view)
}
