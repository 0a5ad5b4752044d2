//! Loading `nodepool.yaml` and the secure file into a [`Config`].

use std::path::{Path, PathBuf};

use super::diskimage;
use super::driver::{DriverRegistry, ProviderCommon};
use super::reader::{Diagnostics, Item, MapReader};
use super::yaml::{self, Node, Value};
use super::{
    Config, ConfigError, ConfigErrors, Label, ProviderConfig, Secret, TenantResourceLimit, WebApp,
    ZooKeeperServer, ZooKeeperTls,
};

/// Upstream's default ZooKeeper port when a server entry has none
/// (`nodepool/config.py` uses 2281, the TLS port, not 2181).
pub const DEFAULT_ZOOKEEPER_PORT: u16 = 2281;

fn read_file(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::from(ConfigError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        })
    })
}

/// Load `path` and, when given, the secure file, with the process
/// environment for `%(NODEPOOL_...)` substitution.
pub fn load(
    path: &Path,
    secure: Option<&Path>,
    registry: &DriverRegistry,
) -> Result<Config, ConfigErrors> {
    let text = read_file(path)?;
    let secure_text = match secure {
        Some(p) => Some((p.display().to_string(), read_file(p)?)),
        None => None,
    };
    load_str_with_secure(
        &path.display().to_string(),
        &text,
        secure_text.as_ref().map(|(n, t)| (n.as_str(), t.as_str())),
        registry,
    )
}

/// Load a configuration from text; `file` names it in errors.
pub fn load_str(file: &str, text: &str, registry: &DriverRegistry) -> Result<Config, ConfigErrors> {
    load_str_with_secure(file, text, None, registry)
}

/// Load a configuration and an optional secure file `(name, text)` from text.
///
/// The secure file may hold `zookeeper-servers` (replacing the main file's
/// list), `zookeeper-tls` (replacing it) and `diskimages` entries of `name`
/// and `env-vars` (merged into that image's env-vars), as upstream; any
/// other key is an "unknown key" error.
pub fn load_str_with_secure(
    file: &str,
    text: &str,
    secure: Option<(&str, &str)>,
    registry: &DriverRegistry,
) -> Result<Config, ConfigErrors> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut warnings = Vec::new();
    let main = parse_doc(file, text, &env, &mut warnings)?;
    let secure_doc = match secure {
        Some((name, text)) => Some((name, parse_doc(name, text, &env, &mut warnings)?)),
        None => None,
    };

    let diag = Diagnostics::new();
    let mut config = Config::default();
    match &main {
        Some(root) => {
            if let Some(top) = MapReader::new(file, root, String::new(), &diag) {
                read_top(top, &mut config, registry);
            }
        }
        None => diag.error(ConfigError {
            file: file.to_string(),
            line: 1,
            column: 1,
            path: String::new(),
            message: "the configuration is empty".to_string(),
        }),
    }
    if let Some((name, Some(root))) = &secure_doc {
        if let Some(top) = MapReader::new(name, root, String::new(), &diag) {
            read_secure(top, &mut config);
        }
    }

    let (errors, more) = diag.into_parts();
    warnings.extend(more);
    if errors.is_empty() {
        config.warnings = warnings;
        Ok(config)
    } else {
        Err(ConfigErrors { errors, warnings })
    }
}

fn parse_doc(
    file: &str,
    text: &str,
    env: &[(String, String)],
    warnings: &mut Vec<String>,
) -> Result<Option<Node>, ConfigErrors> {
    let text = yaml::substitute_env_vars(text, env.iter().map(|(k, v)| (k, v)));
    let doc = yaml::parse(file, &text).map_err(|e| ConfigErrors {
        errors: vec![e],
        warnings: warnings.clone(),
    })?;
    warnings.extend(doc.warnings);
    Ok(doc.root)
}

fn read_top(mut top: MapReader<'_>, config: &mut Config, registry: &DriverRegistry) {
    config.elements_dir = top.opt_str("elements-dir").map(PathBuf::from);
    config.images_dir = top.opt_str("images-dir").map(PathBuf::from);
    config.build_log_dir = top.opt_str("build-log-dir").map(PathBuf::from);
    config.build_log_retention = top.i64_or("build-log-retention", 7);
    config.max_hold_age = top.opt_i64("max-hold-age").filter(|v| *v > 0);
    if let Some(webapp) = top.opt_map("webapp") {
        config.webapp = read_webapp(webapp);
    }
    if let Some(servers) = top.take("zookeeper-servers") {
        config.zookeeper_servers = read_zk_servers(&servers);
    }
    if let Some(tls) = top.opt_map("zookeeper-tls") {
        config.zookeeper_tls = read_zk_tls(tls);
    }
    config.zookeeper_timeout = top.f64_or("zookeeper-timeout", 10.0);

    let raw_images: Vec<_> = top
        .seq_of_maps("diskimages")
        .into_iter()
        .filter_map(diskimage::read)
        .collect();
    config.diskimages = diskimage::resolve(&raw_images);

    for label in top.seq_of_maps("labels") {
        if let Some(label) = read_label(label) {
            if config.label(&label.name).is_some() {
                top.warn(format!(
                    "label {:?} defined twice; the last definition is used",
                    label.name
                ));
                config.labels.retain(|l| l.name != label.name);
            }
            config.labels.push(label);
        }
    }

    if let Some(list) = top
        .take("tenant-resource-limits")
        .and_then(|i| i.as_seq_of_maps())
    {
        config.tenant_resource_limits = list.into_iter().filter_map(read_tenant_limit).collect();
    }

    let mut provider_nodes = Vec::new();
    if let Some(items) = top.take("providers").and_then(|i| i.as_seq()) {
        for item in items {
            let Some(reader) = item.as_map() else {
                continue;
            };
            if let Some(p) = read_provider(reader, registry) {
                if config.provider(&p.name).is_some() {
                    item.warn(format!(
                        "provider {:?} defined twice; the last definition is used",
                        p.name
                    ));
                    config.providers.retain(|o| o.name != p.name);
                }
                provider_nodes.push((p.name.clone(), item.clone()));
                config.providers.push(p);
            }
        }
    }
    top.finish();
    cross_check(config, &raw_images, &provider_nodes);
    diskimage::check_validation_labels(&raw_images, config);
}

fn read_webapp(mut map: MapReader<'_>) -> WebApp {
    let defaults = WebApp::default();
    let port = map.take("port").and_then(|item| port_of(&item));
    let webapp = WebApp {
        port: port.unwrap_or(defaults.port),
        listen_address: map.str_or("listen_address", &defaults.listen_address),
    };
    map.finish();
    webapp
}

fn port_of(item: &Item<'_>) -> Option<u16> {
    let v = item.as_i64()?;
    match u16::try_from(v) {
        Ok(p) => Some(p),
        Err(_) => {
            item.error(format!("expected a port number (0-65535), found {v}"));
            None
        }
    }
}

fn read_zk_servers(item: &Item<'_>) -> Vec<ZooKeeperServer> {
    let Some(list) = item.as_seq_of_maps() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let last = list.len().saturating_sub(1);
    for (i, mut server) in list.into_iter().enumerate() {
        let host = server.required_str("host");
        let port = server
            .take("port")
            .and_then(|i| port_of(&i))
            .unwrap_or(DEFAULT_ZOOKEEPER_PORT);
        let chroot = server.opt_str("chroot").filter(|c| !c.is_empty());
        if chroot.is_some() && i != last {
            // Upstream joins the entries as `host:port<chroot>,...` and kazoo
            // takes the chroot from the first `/` of that string: its path
            // and servers would differ from ours.
            server.warn(
                "with several zookeeper-servers, give chroot on the last entry only: \
                 upstream nodepool joins the entries as host:port/chroot and its client \
                 reads the chroot after the first '/', so a chroot on an earlier entry \
                 gives upstream's tools another path (and fewer servers) than ours",
            );
        }
        server.finish();
        if let Some(host) = host {
            out.push(ZooKeeperServer { host, port, chroot });
        }
    }
    out
}

fn read_zk_tls(mut map: MapReader<'_>) -> Option<ZooKeeperTls> {
    let cert = map.required_str("cert");
    let key = map.required_str("key");
    let ca = map.required_str("ca");
    map.finish();
    Some(ZooKeeperTls {
        ca: ca?.into(),
        cert: cert?.into(),
        key: key?.into(),
    })
}

/// The largest `min-ready` honoured. Upstream takes any integer and, for
/// one far beyond what its pools hold, creates requests without end; a
/// larger value is clamped to this with a warning.
pub const MAX_MIN_READY: i64 = 10_000;

fn read_label(mut map: MapReader<'_>) -> Option<Label> {
    let name = map.required_str("name");
    let min_ready = match map.take("min-ready") {
        Some(item) => match item.as_i64() {
            Some(v) if v > MAX_MIN_READY => {
                item.warn(format!(
                    "min-ready {v} is more nodes than any cloud holds; nodepool-rs keeps at \
                     most {MAX_MIN_READY} ready (upstream would create requests without end)"
                ));
                MAX_MIN_READY
            }
            Some(v) => v,
            None => 0,
        },
        None => 0,
    };
    let max_ready_age = map.i64_or("max-ready-age", 0);
    map.finish();
    Some(Label {
        name: name?,
        min_ready,
        max_ready_age,
    })
}

fn read_tenant_limit(mut map: MapReader<'_>) -> Option<TenantResourceLimit> {
    let tenant_name = map.required_str("tenant-name");
    let max_cores = map.opt_i64("max-cores");
    let max_ram = map.opt_i64("max-ram");
    let max_servers = map.opt_i64("max-servers");
    let other = map
        .rest()
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_i64()?)))
        .collect();
    Some(TenantResourceLimit {
        tenant_name: tenant_name?,
        max_cores,
        max_ram,
        max_servers,
        other,
    })
}

/// The driver name of a provider as upstream resolves it: `driver:`,
/// default "openstack", and always "fake" for names starting with "fake".
pub(crate) fn resolve_driver(name: &str, driver: Option<String>) -> String {
    if name.starts_with("fake") {
        "fake".to_string()
    } else {
        driver.unwrap_or_else(|| "openstack".to_string())
    }
}

fn read_provider(mut map: MapReader<'_>, registry: &DriverRegistry) -> Option<ProviderConfig> {
    let name = map.required_str("name");
    let driver_item = map.take("driver");
    // Upstream overwrites `driver` of a provider named fake* unread.
    let named_fake = name.as_deref().is_some_and(|n| n.starts_with("fake"));
    let driver = driver_item
        .as_ref()
        .filter(|_| !named_fake)
        .and_then(Item::as_str);
    let max_concurrency = map.i64_or("max-concurrency", -1);
    let priority = map.opt_i64("priority");
    let name = name?;
    let driver_name = resolve_driver(&name, driver);
    let Some(driver) = registry.get(&driver_name) else {
        let message = format!(
            "unknown driver {driver_name:?}; registered drivers: {}",
            registry.names().join(", ")
        );
        match &driver_item {
            Some(item) => item.error(message),
            None => map.error(message),
        }
        return None;
    };
    let common = ProviderCommon {
        name,
        driver: driver_name,
        location: map.location(),
        max_concurrency,
        priority,
    };
    let before = map.diagnostics().error_count();
    let parsed = driver.parse_provider(&mut map, common);
    if parsed.is_none() && map.diagnostics().error_count() == before {
        map.error(format!(
            "driver {:?} could not read this provider",
            driver.name()
        ));
    }
    map.finish();
    parsed
}

fn read_secure(mut top: MapReader<'_>, config: &mut Config) {
    if let Some(servers) = top.take("zookeeper-servers") {
        let servers = read_zk_servers(&servers);
        if !servers.is_empty() {
            config.zookeeper_servers = servers;
        }
    }
    if let Some(tls) = top.opt_map("zookeeper-tls") {
        config.zookeeper_tls = read_zk_tls(tls);
    }
    let entries = top.seq_of_maps("diskimages");
    diskimage::apply_secure(&mut config.diskimages, entries);
    if let Some(token) = top.opt_str("api-token") {
        config.api_token = Some(Secret::new(token));
    }
    top.finish();
}

/// Find a pool label's entry in a provider's raw mapping, for error
/// positions (drivers that nest labels differently get the provider's).
fn label_node<'n>(provider: &'n Node, pool: &str, label: &str) -> Option<&'n Node> {
    let by_name = |list: &'n Node, name: &str| -> Option<&'n Node> {
        match &list.value {
            Value::Seq(items) => items
                .iter()
                .find(|n| n.get("name").and_then(Node::as_str) == Some(name)),
            _ => None,
        }
    };
    let pool = by_name(provider.get("pools")?, pool)?;
    by_name(pool.get("labels")?, label)
}

/// Upstream's validator checks: labels used by pools exist, diskimages used
/// by providers and labels exist.
fn cross_check(
    config: &Config,
    raw_images: &[diskimage::RawDiskImage<'_>],
    providers: &[(String, Item<'_>)],
) {
    let image_known = |name: &str| raw_images.iter().any(|d| d.name == name);
    for provider in &config.providers {
        let Some((_, item)) = providers.iter().rev().find(|(n, _)| *n == provider.name) else {
            continue;
        };
        for (i, image) in provider.diskimages.iter().enumerate() {
            if !image_known(&image.name) {
                let at = item.node().get("diskimages").and_then(|n| match &n.value {
                    Value::Seq(items) => items.get(i),
                    _ => None,
                });
                error_at(
                    item,
                    at,
                    format!(
                    "diskimage {:?} in provider {:?} is not defined in the main diskimages list",
                    image.name, provider.name
                ),
                );
            }
        }
        for pool in &provider.pools {
            for label in &pool.labels {
                let at = label_node(item.node(), &pool.name, &label.name);
                if config.label(&label.name).is_none() {
                    error_at(
                        item,
                        at,
                        format!(
                            "label {:?} in provider {:?} is not in the top-level labels",
                            label.name, provider.name
                        ),
                    );
                }
                if let Some(image) = &label.diskimage {
                    if !image_known(image) {
                        error_at(
                            item,
                            at,
                            format!(
                            "label {:?} in provider {:?} uses diskimage {image:?} which is not \
                             defined in the main diskimages list",
                            label.name, provider.name
                        ),
                        );
                    }
                }
            }
        }
    }
}

fn error_at(provider: &Item<'_>, node: Option<&Node>, message: String) {
    let node = node.unwrap_or(provider.node());
    provider.diagnostics().error(ConfigError {
        file: provider.file().to_string(),
        line: node.line,
        column: node.column,
        path: provider.path().to_string(),
        message,
    });
}
