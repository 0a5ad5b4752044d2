//! The simulated cloud's resources and the rules that change them: servers
//! boot after a delay, ports follow their server, floating IPs detach when
//! their port goes, quota is checked on create. Every status is derived
//! from wall-clock timestamps, so a state file reloaded after a restart
//! carries on where it stopped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{Faults, SimConfig};

/// Seconds since the Unix epoch, now.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A new random id, as OpenStack's UUIDs.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A Keystone token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    /// The user's name.
    pub user: String,
    /// How it was obtained (`password`, `application_credential`).
    pub method: String,
    /// Issue time (epoch seconds).
    pub issued_at: f64,
    /// Expiry time (epoch seconds).
    pub expires_at: f64,
}

/// The volume a server boots from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootVolume {
    /// Volume id.
    pub id: String,
    /// Size in GiB.
    pub size: u64,
    /// Deleted with the server.
    pub delete_on_termination: bool,
}

/// A Nova server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// Server id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Image id (none when booted from a volume).
    pub image_id: Option<String>,
    /// Flavor id.
    pub flavor_id: String,
    /// Keypair.
    pub key_name: Option<String>,
    /// Availability zone.
    pub az: String,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Base64 user data as given.
    pub user_data: Option<String>,
    /// Security group names.
    pub security_groups: Vec<String>,
    /// Config drive requested.
    pub config_drive: bool,
    /// Boot volume, when booted from one.
    pub boot_volume: Option<BootVolume>,
    /// Port ids.
    pub ports: Vec<String>,
    /// Creation time.
    pub created: f64,
    /// When it leaves BUILD (`None`: never).
    pub ready_at: Option<f64>,
    /// It ends in ERROR with this fault message.
    pub fail_with: Option<String>,
    /// When it was deleted, if it was.
    pub deleted_at: Option<f64>,
    /// The hypervisor host id.
    pub host_id: String,
}

impl Server {
    /// Nova's status at `t`: BUILD, ACTIVE or ERROR.
    pub fn status(&self, t: f64) -> &'static str {
        match self.ready_at {
            Some(at) if t >= at => {
                if self.fail_with.is_some() {
                    "ERROR"
                } else {
                    "ACTIVE"
                }
            }
            _ => "BUILD",
        }
    }
}

/// A Neutron port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Port {
    /// Port id.
    pub id: String,
    /// Network id.
    pub network_id: String,
    /// Owning server id ("" when detached).
    pub device_id: String,
    /// `compute:<az>`, `network:dhcp`, ... ("" when detached).
    pub device_owner: String,
    /// ACTIVE or DOWN.
    pub status: String,
    /// Fixed IPv4 address.
    pub ip: String,
    /// MAC address.
    pub mac: String,
}

/// A Neutron floating IP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloatingIp {
    /// Id.
    pub id: String,
    /// The public address.
    pub address: String,
    /// The external network it comes from.
    pub network_id: String,
    /// The port it is attached to.
    pub port_id: Option<String>,
    /// ACTIVE when attached, DOWN otherwise.
    pub status: String,
}

/// A Glance image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// queued, saving, importing, active.
    pub status: String,
    /// disk_format.
    pub disk_format: Option<String>,
    /// container_format.
    pub container_format: Option<String>,
    /// visibility.
    pub visibility: String,
    /// Bytes uploaded.
    pub size: Option<u64>,
    /// Additional properties, as JSON values.
    pub properties: BTreeMap<String, serde_json::Value>,
    /// Creation time.
    pub created: f64,
    /// Last update time.
    pub updated: f64,
    /// Bytes staged by an interoperable import, awaiting `import`.
    pub staged: Option<u64>,
    /// `min_disk` in GiB.
    #[serde(default)]
    pub min_disk: u64,
    /// `min_ram` in MiB.
    #[serde(default)]
    pub min_ram: u64,
}

/// Everything the simulated cloud holds. Serialized as the state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Cloud {
    /// What it offers.
    pub config: SimConfig,
    /// Faults injected now.
    pub faults: Faults,
    /// Tokens by id.
    pub tokens: BTreeMap<String, Token>,
    /// Servers by id.
    pub servers: BTreeMap<String, Server>,
    /// Ports by id.
    pub ports: BTreeMap<String, Port>,
    /// Floating IPs by id.
    pub floating_ips: BTreeMap<String, FloatingIp>,
    /// Images by id.
    pub images: BTreeMap<String, Image>,
    /// The last host octet handed out.
    pub last_octet: u32,
    /// Tokens issued so far.
    pub tokens_issued: u64,
    /// Requests answered so far, by `METHOD path`, for tests.
    #[serde(skip)]
    pub request_log: Vec<(String, String, f64)>,
}

/// Usage counted against the compute limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Servers.
    pub instances: i64,
    /// Cores.
    pub cores: i64,
    /// RAM in MiB.
    pub ram: i64,
}

impl Cloud {
    /// A new cloud offering `config`, with its cloud images.
    pub fn new(config: SimConfig) -> Self {
        let t = now();
        let images = config
            .cloud_images
            .iter()
            .map(|i| {
                let image = Image {
                    id: i.id.clone(),
                    name: i.name.clone(),
                    status: "active".to_string(),
                    disk_format: Some("qcow2".to_string()),
                    container_format: Some("bare".to_string()),
                    visibility: "public".to_string(),
                    size: Some(0),
                    properties: BTreeMap::new(),
                    created: t,
                    updated: t,
                    staged: None,
                    min_disk: 0,
                    min_ram: 0,
                };
                (i.id.clone(), image)
            })
            .collect();
        Self {
            config,
            images,
            ..Self::default()
        }
    }

    /// Apply what time has done: finished deletes remove servers (and
    /// their ports, or leave them leaked), booted servers activate their
    /// ports. Returns whether anything changed.
    pub fn settle(&mut self, t: f64) -> bool {
        let delay = self.config.delete_delay_secs;
        let gone: Vec<String> = self
            .servers
            .values()
            .filter(|s| s.deleted_at.is_some_and(|d| t >= d + delay))
            .map(|s| s.id.clone())
            .collect();
        let mut changed = !gone.is_empty();
        for id in gone {
            if let Some(server) = self.servers.remove(&id) {
                self.remove_ports(&server.ports);
            }
        }
        self.tokens.retain(|_, tok| tok.expires_at + 3600.0 > t);
        for server in self.servers.values() {
            if server.status(t) == "ACTIVE" {
                for port in &server.ports {
                    if let Some(p) = self.ports.get_mut(port) {
                        if p.status != "ACTIVE" {
                            p.status = "ACTIVE".to_string();
                            changed = true;
                        }
                    }
                }
            }
        }
        changed
    }

    fn remove_ports(&mut self, ports: &[String]) {
        for port_id in ports {
            if self.faults.leak_ports_on_delete {
                if let Some(p) = self.ports.get_mut(port_id) {
                    p.status = "DOWN".to_string();
                    p.device_id = String::new();
                    p.device_owner = String::new();
                }
            } else {
                self.ports.remove(port_id);
            }
            for fip in self.floating_ips.values_mut() {
                if fip.port_id.as_deref() == Some(port_id) {
                    fip.port_id = None;
                    fip.status = "DOWN".to_string();
                }
            }
        }
    }

    /// Servers (not yet deleted) counted against the limits.
    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for s in self.servers.values().filter(|s| s.deleted_at.is_none()) {
            u.instances += 1;
            if let Some(f) = self.config.flavors.iter().find(|f| f.id == s.flavor_id) {
                u.cores += i64::try_from(f.vcpus).unwrap_or(i64::MAX);
                u.ram += i64::try_from(f.ram).unwrap_or(i64::MAX);
            }
        }
        u
    }

    /// Volumes and GiB the servers' boot volumes use (Cinder's
    /// `totalVolumesUsed`, `totalGigabytesUsed`).
    pub fn volume_usage(&self) -> (u64, u64) {
        self.servers
            .values()
            .filter(|s| s.deleted_at.is_none())
            .filter_map(|s| s.boot_volume.as_ref())
            .fold((0, 0), |(n, gb), v| (n + 1, gb + v.size))
    }

    /// The quota Nova would refuse a new server of `flavor` for, as its
    /// 403 message.
    pub fn quota_refusal(&self, vcpus: u64, ram: u64) -> Option<String> {
        let u = self.usage();
        let l = self.config.limits;
        let over = |limit: i64, used: i64, want: u64| {
            limit >= 0 && used + i64::try_from(want).unwrap_or(i64::MAX) > limit
        };
        let (what, want, used, limit) = if over(l.max_instances, u.instances, 1) {
            ("instances", 1, u.instances, l.max_instances)
        } else if over(l.max_cores, u.cores, vcpus) {
            ("cores", vcpus, u.cores, l.max_cores)
        } else if over(l.max_ram, u.ram, ram) {
            ("ram", ram, u.ram, l.max_ram)
        } else {
            return None;
        };
        Some(format!(
            "Quota exceeded for {what}: Requested {want}, but already used {used} of {limit} {what}"
        ))
    }

    /// A new fixed IP on a network with `prefix`.
    pub fn next_ip(&mut self, prefix: &str) -> String {
        self.last_octet = self.last_octet % 250 + 1;
        format!("{prefix}.{}", self.last_octet + 3)
    }

    /// A new MAC address.
    pub fn next_mac(&self) -> String {
        let n = self.ports.len() + self.floating_ips.len() + self.servers.len();
        format!(
            "fa:16:3e:{:02x}:{:02x}:{:02x}",
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        )
    }
}

/// The shared, lockable cloud, optionally saved to a file on every change.
#[derive(Debug, Clone)]
pub struct SimState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cloud: Mutex<Cloud>,
    state_file: Option<PathBuf>,
}

impl SimState {
    /// A fresh cloud offering `config`, kept in memory.
    pub fn new(config: SimConfig) -> Self {
        Self::from_cloud(Cloud::new(config), None)
    }

    fn from_cloud(cloud: Cloud, state_file: Option<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                cloud: Mutex::new(cloud),
                state_file,
            }),
        }
    }

    /// The cloud saved in `path` if it exists, else a fresh one offering
    /// `config`; every change is saved back to `path`.
    pub fn with_state_file(path: PathBuf, config: SimConfig) -> std::io::Result<Self> {
        let cloud = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("state file {}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Cloud::new(config),
            Err(e) => return Err(e),
        };
        let state = Self::from_cloud(cloud, Some(path));
        state.update(|_| ());
        Ok(state)
    }

    fn lock(&self) -> MutexGuard<'_, Cloud> {
        // A panic while holding the lock leaves a consistent enough cloud
        // for a simulator: keep serving.
        self.inner
            .cloud
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Read the cloud (after settling what time has done).
    pub fn read<T>(&self, f: impl FnOnce(&Cloud) -> T) -> T {
        let mut cloud = self.lock();
        if cloud.settle(now()) {
            self.save(&cloud);
        }
        f(&cloud)
    }

    /// Change the cloud and save it.
    pub fn update<T>(&self, f: impl FnOnce(&mut Cloud) -> T) -> T {
        let mut cloud = self.lock();
        cloud.settle(now());
        let out = f(&mut cloud);
        self.save(&cloud);
        out
    }

    /// Replace the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        self.update(|c| c.faults = faults);
    }

    /// The requests answered so far (`METHOD`, path, time).
    pub fn request_log(&self) -> Vec<(String, String, f64)> {
        self.lock().request_log.clone()
    }

    fn save(&self, cloud: &Cloud) {
        let Some(path) = &self.inner.state_file else {
            return;
        };
        let result = serde_json::to_vec_pretty(cloud)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, path)
            });
        if let Err(e) = result {
            tracing::error!(path = %path.display(), error = %e, "cannot save the simulator state");
        }
    }
}
