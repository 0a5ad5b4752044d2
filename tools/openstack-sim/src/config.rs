//! What the simulated cloud offers ([`SimConfig`]) and the faults it injects
//! ([`Faults`]). Both are plain serde data: the admin endpoint
//! (`/_sim/faults`) and the state file use the same JSON.

use serde::{Deserialize, Serialize};

/// A Keystone user that can get a password token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimUser {
    /// User id.
    pub id: String,
    /// User name.
    pub name: String,
    /// Password.
    pub password: String,
    /// The user's domain name (`Default`).
    pub domain: String,
    /// The project tokens are scoped to.
    pub project: String,
    /// The project's id.
    pub project_id: String,
    /// The project's domain name.
    pub project_domain: String,
}

/// A Keystone application credential (already scoped to its user's project).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimAppCredential {
    /// Credential id.
    pub id: String,
    /// Credential name (unique per user).
    pub name: String,
    /// The secret.
    pub secret: String,
    /// The owning user's name.
    pub user: String,
}

/// A Nova flavor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimFlavor {
    /// Flavor id.
    pub id: String,
    /// Flavor name.
    pub name: String,
    /// RAM in MiB.
    pub ram: u64,
    /// Virtual CPUs.
    pub vcpus: u64,
    /// Root disk in GiB.
    pub disk: u64,
}

/// The project's compute limits; -1 means unlimited, as Nova reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SimLimits {
    /// `maxTotalInstances`.
    pub max_instances: i64,
    /// `maxTotalCores`.
    pub max_cores: i64,
    /// `maxTotalRAMSize` in MiB.
    pub max_ram: i64,
}

/// The project's Cinder limits; -1 means unlimited, as Cinder reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SimVolumeLimits {
    /// `maxTotalVolumes`.
    pub max_volumes: i64,
    /// `maxTotalVolumeGigabytes`.
    pub max_gigabytes: i64,
}

/// A Neutron network. Fixed IPs are `<prefix>.<n>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimNetwork {
    /// Network id.
    pub id: String,
    /// Network name.
    pub name: String,
    /// The first three octets of its /24 (`10.0.0`).
    pub prefix: String,
    /// `router:external`: floating IPs come from it.
    pub external: bool,
}

/// A Glance image present from the start (a "cloud image").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimCloudImage {
    /// Image id.
    pub id: String,
    /// Image name.
    pub name: String,
}

/// What the simulated cloud offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// The region every endpoint of the catalog is in.
    pub region: String,
    /// Users that can get password tokens.
    pub users: Vec<SimUser>,
    /// Application credentials.
    pub app_credentials: Vec<SimAppCredential>,
    /// How long a token lives, in seconds.
    pub token_ttl_secs: f64,
    /// How long a server stays in BUILD, in seconds.
    pub boot_delay_secs: f64,
    /// How long a deleted server is still listed (status DELETED is never
    /// shown; it stays ACTIVE with task_state deleting), in seconds.
    pub delete_delay_secs: f64,
    /// Flavors.
    pub flavors: Vec<SimFlavor>,
    /// Compute limits.
    pub limits: SimLimits,
    /// Cinder's limits. `None` (the default): the cloud has no
    /// block-storage endpoint in its catalog.
    pub volume_limits: Option<SimVolumeLimits>,
    /// Availability zones.
    pub availability_zones: Vec<String>,
    /// Networks; servers without `networks` get the first internal one.
    pub networks: Vec<SimNetwork>,
    /// Images present from the start.
    pub cloud_images: Vec<SimCloudImage>,
    /// The `disk_format`s Glance accepts (its `disk_formats` option),
    /// advertised in `GET /v2/schemas/image`.
    pub disk_formats: Vec<String>,
}

/// Glance's default `disk_formats`.
pub const GLANCE_DISK_FORMATS: &[&str] = &[
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop",
];

impl Default for SimConfig {
    fn default() -> Self {
        let flavor = |id: &str, name: &str, ram, vcpus, disk| SimFlavor {
            id: id.to_string(),
            name: name.to_string(),
            ram,
            vcpus,
            disk,
        };
        Self {
            region: "RegionOne".to_string(),
            users: vec![SimUser {
                id: "u-demo".to_string(),
                name: "demo".to_string(),
                password: "demo-password".to_string(),
                domain: "Default".to_string(),
                project: "demo".to_string(),
                project_id: "p-demo".to_string(),
                project_domain: "Default".to_string(),
            }],
            app_credentials: vec![SimAppCredential {
                id: "ac-nodepool".to_string(),
                name: "nodepool".to_string(),
                secret: "app-credential-secret".to_string(),
                user: "demo".to_string(),
            }],
            token_ttl_secs: 3600.0,
            boot_delay_secs: 0.2,
            delete_delay_secs: 0.0,
            flavors: vec![
                flavor("1", "m1.tiny", 512, 1, 1),
                flavor("2", "m1.small", 2048, 1, 20),
                flavor("3", "m1.medium", 4096, 2, 40),
                flavor("4", "m1.large", 8192, 4, 80),
                flavor("5", "m1.xlarge", 16384, 8, 160),
            ],
            limits: SimLimits {
                max_instances: 20,
                max_cores: 40,
                max_ram: 51200,
            },
            volume_limits: None,
            availability_zones: vec!["nova".to_string()],
            networks: vec![
                SimNetwork {
                    id: "net-private".to_string(),
                    name: "private".to_string(),
                    prefix: "10.0.0".to_string(),
                    external: false,
                },
                SimNetwork {
                    id: "net-public".to_string(),
                    name: "public".to_string(),
                    prefix: "203.0.113".to_string(),
                    external: true,
                },
            ],
            cloud_images: vec![SimCloudImage {
                id: "img-cirros".to_string(),
                name: "cirros".to_string(),
            }],
            disk_formats: GLANCE_DISK_FORMATS.iter().map(|f| f.to_string()).collect(),
        }
    }
}

/// One injected fault on matching API requests.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultRule {
    /// HTTP method to match (any when unset).
    pub method: Option<String>,
    /// A substring of the path to match (any when unset), e.g.
    /// `/compute/v2.1/servers`.
    pub path: Option<String>,
    /// Answer with this status (and the API's error body) instead.
    pub status: Option<u16>,
    /// The error message in the body.
    pub message: Option<String>,
    /// Close the connection without answering.
    pub drop_connection: bool,
    /// Wait this long before handling (or failing) the request.
    pub delay_ms: Option<u64>,
    /// How many matching requests it affects (unset: all).
    pub times: Option<u32>,
}

impl FaultRule {
    /// Whether the rule applies to `method path`.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.times != Some(0)
            && self
                .method
                .as_deref()
                .map_or(true, |m| m.eq_ignore_ascii_case(method))
            && self.path.as_deref().map_or(true, |p| path.contains(p))
    }
}

/// Servers that end in ERROR instead of ACTIVE.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BootFault {
    /// The server's `fault.message`, e.g. "No valid host was found." or
    /// "Quota exceeded for instances"; `{id}` is replaced by the server's
    /// id.
    pub message: String,
    /// How many new servers fail (unset: all).
    pub times: Option<u32>,
}

impl BootFault {
    /// `times` servers fail with `message`.
    pub fn new(message: impl Into<String>, times: Option<u32>) -> Self {
        Self {
            message: message.into(),
            times,
        }
    }

    /// `times` servers fail as Nova fails a build whose boot volume
    /// Cinder refuses for quota (a fault with "exceeds" and "quota", what
    /// upstream takes for a quota error).
    pub fn volume_quota(times: Option<u32>) -> Self {
        Self::new(
            "Build of instance {id} aborted: VolumeSizeExceedsAvailableQuota: \
             Requested volume or snapshot exceeds allowed gigabytes quota. \
             Requested 50G, quota is 1000G and 980G has been consumed. (HTTP 413)",
            times,
        )
    }

    /// `times` servers fail as Nova's conductor fails a build when its
    /// quota recheck finds the project over `resource` (`instances`,
    /// `cores`, `ram`).
    pub fn recheck_quota(resource: &str, times: Option<u32>) -> Self {
        Self::new(
            format!(
                "Quota exceeded for {resource}: Requested 1, but already used 20 of 20 {resource}"
            ),
            times,
        )
    }
}

/// The faults the simulator injects now. `POST /_sim/faults` replaces them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Request-level faults, tried in order; the first match applies.
    pub rules: Vec<FaultRule>,
    /// New servers go to ERROR after booting.
    pub boot_error: Option<BootFault>,
    /// New servers stay in BUILD this long instead of the configured delay.
    pub boot_delay_secs: Option<f64>,
    /// New servers never leave BUILD.
    pub never_boot: bool,
    /// Deleting a server leaves its ports behind, DOWN and detached (as a
    /// Neutron hiccup does), for port cleanup to find.
    pub leak_ports_on_delete: bool,
}
