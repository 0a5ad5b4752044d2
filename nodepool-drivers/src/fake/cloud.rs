//! The fake cloud: instances and images in memory, with upstream's fake
//! limits and flavors, a boot delay, and faults injected by a seeded RNG.
//!
//! A [`FakeCloud`] is a cheap, clonable handle: tests keep one to inspect
//! what providers did, and several providers may share one cloud (as two
//! provider entries may point at the same cloud account upstream).
//!
//! Time is tokio's clock, so tests with paused time
//! (`#[tokio::test(start_paused = true)]`) boot instances instantly and
//! deterministically. An instance is `Building` until `boot_delay` after its
//! creation, then `Active` (or `Error` for an injected boot failure); nothing
//! runs in the background.

use nodepool_core::ErrorKind;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nodepool_core::provider::{
    CloudImage, ImageRef, Instance, InstanceState, Resources, META_NODE_ID,
};
use nodepool_core::time::LONGEST_WAIT;
use nodepool_core::{Error, Result};
use tokio::time::Instant;

/// The name of upstream's fake cloud image.
pub const FAKE_IMAGE_NAME: &str = "Fake Precise";
/// The id of upstream's fake cloud image.
pub const FAKE_IMAGE_ID: &str = "fake-image-id";

/// A server size the cloud offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flavor {
    /// Flavor name.
    pub name: String,
    /// vCPUs.
    pub cores: u64,
    /// RAM in MB.
    pub ram: u64,
}

impl Flavor {
    /// The resources one server of this flavor uses.
    pub fn resources(&self) -> Resources {
        Resources {
            instances: Some(1),
            cores: Some(self.cores),
            ram: Some(self.ram),
            ..Resources::default()
        }
    }
}

/// Faults to inject, each a probability from 0.0 to 1.0, drawn from an RNG
/// seeded with `seed` so a test sees the same faults on every run.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSettings {
    /// A mutating call (create, delete, image upload or delete) fails with a
    /// retryable [`Error::Cloud`].
    pub error_rate: f64,
    /// A created instance never becomes active (the engine's boot timeout
    /// must catch it), like upstream's `_test_timeout` servers.
    pub timeout_rate: f64,
    /// A create fails with [`Error::QuotaExceeded`] although quota is left
    /// (another tenant of the cloud took it first).
    pub quota_error_rate: f64,
    /// A created instance ends in `Error` state instead of `Active`.
    pub boot_failure_rate: f64,
    /// The RNG seed.
    pub seed: u64,
}

impl Default for FaultSettings {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            timeout_rate: 0.0,
            quota_error_rate: 0.0,
            boot_failure_rate: 0.0,
            seed: 0x6e6f_6465_706f_6f6c,
        }
    }
}

/// How a fake cloud behaves. The defaults are upstream's fake cloud.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeCloudSettings {
    /// Time from create to `Active` (default 0.1 s).
    pub boot_delay: Duration,
    /// Instance quota (default 20).
    pub max_instances: u64,
    /// Core quota (default 100).
    pub max_cores: u64,
    /// RAM quota in MB (default 1 000 000).
    pub max_ram: u64,
    /// Flavors, smallest RAM first (default: "Fake Flavor" and "Unreal
    /// Flavor", 4 cores and 8192 MB each).
    pub flavors: Vec<Flavor>,
    /// Availability zones (default "az1", "az2").
    pub azs: Vec<String>,
    /// Faults to inject (default none).
    pub faults: FaultSettings,
    /// Time a deleted server stays `Deleting`, still listed and still
    /// counted against the quota, as Nova's do (default 0: gone at once).
    pub delete_delay: Duration,
}

impl Default for FakeCloudSettings {
    fn default() -> Self {
        let flavor = |name: &str| Flavor {
            name: name.to_string(),
            cores: 4,
            ram: 8192,
        };
        Self {
            boot_delay: Duration::from_millis(100),
            max_instances: 20,
            max_cores: 100,
            max_ram: 1_000_000,
            flavors: vec![flavor("Fake Flavor"), flavor("Unreal Flavor")],
            azs: vec!["az1".to_string(), "az2".to_string()],
            faults: FaultSettings::default(),
            delete_delay: Duration::ZERO,
        }
    }
}

impl FakeCloudSettings {
    /// The flavor upstream's OpenStack driver would pick: with `min_ram`, the
    /// first flavor (smallest RAM first) with at least that much RAM whose
    /// name contains `name` when given; without, the flavor named `name`.
    pub fn find_flavor(&self, name: Option<&str>, min_ram: Option<u64>) -> Option<&Flavor> {
        match min_ram {
            Some(min_ram) if min_ram > 0 => {
                let mut flavors: Vec<&Flavor> = self.flavors.iter().collect();
                flavors.sort_by_key(|f| f.ram);
                flavors
                    .into_iter()
                    .find(|f| f.ram >= min_ram && name.map_or(true, |n| f.name.contains(n)))
            }
            _ => {
                let name = name?;
                self.flavors.iter().find(|f| f.name == name)
            }
        }
    }

    /// The cloud's quota as [`Resources`].
    pub fn limits(&self) -> Resources {
        Resources {
            instances: Some(self.max_instances),
            cores: Some(self.max_cores),
            ram: Some(self.max_ram),
            ..Resources::default()
        }
    }
}

/// What a create asks the cloud for.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    /// The provider asking (for error messages).
    pub provider: String,
    /// Server name.
    pub name: String,
    /// The image to boot, if any.
    pub image: Option<ImageRef>,
    /// What the server uses.
    pub resources: Resources,
    /// Metadata to set.
    pub metadata: BTreeMap<String, String>,
    /// Availability zone; `None` lets the cloud choose.
    pub az: Option<String>,
}

/// How a created instance ends up.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Boots,
    /// Ends in `Error` with [`BOOT_FAILURE`].
    Fails,
    Hangs,
}

/// The error of a server that failed to boot.
const BOOT_FAILURE: &str = "injected fault: server failed to boot";

/// What the servers of one label have in common: metadata other than the
/// node id, AZ, image and size.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    metadata: Box<[(Arc<str>, Arc<str>)]>,
    az: Option<Arc<str>>,
    image_id: Option<Arc<str>>,
    resources: Resources,
}

impl Hash for Shape {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.metadata.hash(state);
        self.az.hash(state);
        self.image_id.hash(state);
        let r = &self.resources;
        (r.instances, r.cores, r.ram).hash(state);
    }
}

/// One server, kept small (~90 bytes): a cloud of 10,000 servers lives in
/// the launcher process. The id and addresses are derived from the serial
/// number (the map key), what servers share is one [`Shape`], and the
/// [`Instance`] view is built when asked for.
#[derive(Debug, Clone)]
struct FakeInstance {
    shape: Arc<Shape>,
    /// The [`META_NODE_ID`] value, if any.
    node_id: Option<Box<str>>,
    ready_at: Instant,
    fate: Fate,
    /// When a deleted server is gone (`None`: not deleted).
    gone_at: Option<Instant>,
}

impl FakeInstance {
    /// The server as the cloud shows it; `n` is its serial number.
    fn snapshot(&self, n: u64, now: Instant) -> Instance {
        let state = match self.fate {
            _ if self.gone_at.is_some() => InstanceState::Deleting,
            Fate::Hangs => InstanceState::Building,
            _ if now < self.ready_at => InstanceState::Building,
            Fate::Boots => InstanceState::Active,
            Fate::Fails => InstanceState::Error(BOOT_FAILURE.to_string()),
        };
        let (hi, lo) = ((n >> 8) & 0xff, n & 0xff);
        let shape = &*self.shape;
        let mut metadata: BTreeMap<String, String> = shape
            .metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(node_id) = &self.node_id {
            metadata.insert(META_NODE_ID.to_string(), node_id.to_string());
        }
        Instance {
            external_id: external_id(n),
            state: Some(state),
            metadata,
            interface_ip: Some(format!("203.0.{hi}.{lo}")),
            public_ipv4: Some(format!("203.0.{hi}.{lo}")),
            private_ipv4: Some(format!("10.0.{hi}.{lo}")),
            public_ipv6: None,
            az: shape.az.as_deref().map(str::to_string),
            cloud: Some("fake".to_string()),
            region: None,
            host_id: Some("fake".to_string()),
            image_id: shape.image_id.as_deref().map(str::to_string),
            resources: shape.resources.clone(),
            host_keys: Vec::new(),
            connection_port: None,
            connection_type: None,
            connection_details: None,
            node_properties: None,
        }
    }
}

/// Where a new cloud's serial numbers start: the microseconds since the
/// epoch, so a cloud made after a restart never hands out an id that a
/// node record of the run before may still name (the cleanup of that old
/// node would delete the new instance).
fn first_serial() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_micros()).ok())
        .unwrap_or(0)
}

/// Whether `external_id` has the shape of an image a fake cloud uploads
/// (`fake-image-<hex>`): one that another process's fake cloud made (the
/// builder's, when the launcher runs as a process of its own, as upstream's
/// daemons do). Upstream's fake boots from any image id; ours from its own
/// uploads and from these.
fn uploaded_elsewhere(external_id: &str) -> bool {
    external_id
        .strip_prefix("fake-image-")
        .is_some_and(|hex| !hex.is_empty() && u64::from_str_radix(hex, 16).is_ok())
}

/// The cloud's id of server `n`.
fn external_id(n: u64) -> String {
    format!("fake-{n:08x}")
}

/// The serial number of the server with id `external_id`, if it is one.
fn serial(external_id: &str) -> Option<u64> {
    let hex = external_id.strip_prefix("fake-")?;
    let n = u64::from_str_radix(hex, 16).ok()?;
    (self::external_id(n) == external_id).then_some(n)
}

/// SplitMix64: small, seedable, good enough for fault injection.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `rate`; draws nothing when `rate` is 0.
    fn chance(&mut self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < rate
    }
}

#[derive(Debug)]
struct State {
    settings: FakeCloudSettings,
    /// By serial number.
    instances: BTreeMap<u64, FakeInstance>,
    /// What `instances` use: (servers, cores, RAM).
    used: (u64, u64, u64),
    /// Metadata keys and AZ names, shared by the instances.
    names: HashSet<Arc<str>>,
    /// The shapes the instances have, each once.
    shapes: HashSet<Arc<Shape>>,
    images: BTreeMap<String, CloudImage>,
    /// Deleted servers still `Deleting`, by when they are gone (the delay
    /// is the same for all, so this is in order).
    deleting: VecDeque<(Instant, u64)>,
    /// Images this cloud deleted: never booted from again (an upload of
    /// another process's fake cloud is, see [`uploaded_elsewhere`]).
    deleted_images: HashSet<String>,
    rng: Rng,
    next_id: u64,
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn used(&self) -> (u64, u64, u64) {
        self.used
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.names.get(s) {
            return found.clone();
        }
        let new: Arc<str> = Arc::from(s);
        self.names.insert(new.clone());
        new
    }

    /// The shared shape of a server with `metadata` (less its node id,
    /// returned apart), `az`, `image_id` and `resources`.
    fn shape(
        &mut self,
        metadata: &BTreeMap<String, String>,
        az: Option<&str>,
        image_id: Option<&str>,
        resources: Resources,
    ) -> (Arc<Shape>, Option<Box<str>>) {
        let mut node_id = None;
        let mut shared = Vec::with_capacity(metadata.len());
        for (k, v) in metadata {
            if k == META_NODE_ID {
                node_id = Some(Box::from(v.as_str()));
            } else {
                shared.push((self.intern(k), self.intern(v)));
            }
        }
        let shape = Shape {
            metadata: shared.into_boxed_slice(),
            az: az.map(|az| self.intern(az)),
            image_id: image_id.map(|id| self.intern(id)),
            resources,
        };
        if let Some(found) = self.shapes.get(&shape) {
            return (found.clone(), node_id);
        }
        let shape = Arc::new(shape);
        self.shapes.insert(shape.clone());
        (shape, node_id)
    }

    fn get(&self, external_id: &str) -> Option<(u64, &FakeInstance)> {
        let n = serial(external_id)?;
        self.instances.get(&n).map(|i| (n, i))
    }

    fn insert(&mut self, n: u64, instance: FakeInstance) {
        let r = &instance.shape.resources;
        let (count, cores, ram) = &mut self.used;
        // Saturating: the settings may say `cores-per-node: 2**63`.
        *count = count.saturating_add(1);
        *cores = cores.saturating_add(r.cores.unwrap_or(0));
        *ram = ram.saturating_add(r.ram.unwrap_or(0));
        if let Some(old) = self.instances.insert(n, instance) {
            self.forget(old);
        }
    }

    fn remove(&mut self, external_id: &str) {
        if let Some(old) = serial(external_id).and_then(|n| self.instances.remove(&n)) {
            self.forget(old);
        }
    }

    /// Delete a server: gone at once, or `Deleting` for the delete delay.
    fn delete(&mut self, external_id: &str, now: Instant) {
        let delay = self.settings.delete_delay;
        if delay.is_zero() {
            self.remove(external_id);
            return;
        }
        let Some(n) = serial(external_id) else {
            return;
        };
        if let Some(instance) = self.instances.get_mut(&n) {
            if instance.gone_at.is_none() {
                let gone_at = now + delay.min(LONGEST_WAIT);
                instance.gone_at = Some(gone_at);
                self.deleting.push_back((gone_at, n));
            }
        }
    }

    /// Forget the deleted servers whose delete delay has passed.
    fn purge(&mut self, now: Instant) {
        while let Some(&(at, n)) = self.deleting.front() {
            if at > now {
                break;
            }
            self.deleting.pop_front();
            if let Some(old) = self.instances.remove(&n) {
                self.forget(old);
            }
        }
    }

    fn forget(&mut self, instance: FakeInstance) {
        let r = &instance.shape.resources;
        let (n, cores, ram) = &mut self.used;
        *n = n.saturating_sub(1);
        *cores = cores.saturating_sub(r.cores.unwrap_or(0));
        *ram = ram.saturating_sub(r.ram.unwrap_or(0));
        // The set's copy and this one: no server uses it any more.
        if Arc::strong_count(&instance.shape) == 2 {
            self.shapes.remove(&instance.shape);
        }
    }

    fn injected_error(&mut self, provider: &str, operation: &str) -> Result<()> {
        if self.rng.chance(self.settings.faults.error_rate) {
            return Err(Error::Cloud {
                provider: provider.to_string(),
                message: format!("injected fault: {operation} failed"),
                kind: ErrorKind::Transient,
                source: None,
            });
        }
        Ok(())
    }
}

/// An in-memory cloud shared by the providers and tests holding a handle.
#[derive(Debug, Clone)]
pub struct FakeCloud {
    state: Arc<Mutex<State>>,
}

impl Default for FakeCloud {
    fn default() -> Self {
        Self::new(FakeCloudSettings::default())
    }
}

impl FakeCloud {
    /// A cloud with `settings`, holding upstream's one cloud image
    /// ([`FAKE_IMAGE_NAME`]).
    pub fn new(settings: FakeCloudSettings) -> Self {
        let seed = settings.faults.seed;
        let image = CloudImage {
            external_id: FAKE_IMAGE_ID.to_string(),
            name: FAKE_IMAGE_NAME.to_string(),
            metadata: BTreeMap::new(),
        };
        Self {
            state: Arc::new(Mutex::new(State {
                settings,
                instances: BTreeMap::new(),
                used: (0, 0, 0),
                names: HashSet::new(),
                shapes: HashSet::new(),
                images: BTreeMap::from([(image.external_id.clone(), image)]),
                deleted_images: HashSet::new(),
                deleting: VecDeque::new(),
                rng: Rng(seed),
                next_id: first_serial(),
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent (every
        // mutation is a single insert or remove), so a poisoned lock is fine.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current settings.
    pub fn settings(&self) -> FakeCloudSettings {
        self.state().settings.clone()
    }

    /// Change the faults from now on (the RNG is reseeded).
    pub fn set_faults(&self, faults: FaultSettings) {
        let mut state = self.state();
        state.rng = Rng(faults.seed);
        state.settings.faults = faults;
    }

    /// Change the quota from now on; existing instances stay.
    pub fn set_limits(&self, max_instances: u64, max_cores: u64, max_ram: u64) {
        let mut state = self.state();
        state.settings.max_instances = max_instances;
        state.settings.max_cores = max_cores;
        state.settings.max_ram = max_ram;
    }

    /// Create a server. Fails with [`Error::QuotaExceeded`] when it does not
    /// fit the quota, with [`Error::Cloud`] for an unknown AZ or uploaded
    /// image, and as the faults say. Cloud images are accepted by any name.
    pub fn create(&self, request: CreateRequest) -> Result<Instance> {
        let mut guard = self.state();
        let state = &mut *guard;
        state.purge(Instant::now());
        let provider = request.provider.as_str();
        state.injected_error(provider, "create server")?;
        let quota_error = |resource: &str| Error::QuotaExceeded {
            provider: provider.to_string(),
            resource: resource.to_string(),
        };
        if state.rng.chance(state.settings.faults.quota_error_rate) {
            return Err(quota_error("instances"));
        }
        let (instances, cores, ram) = state.used();
        let need = &request.resources;
        if instances.saturating_add(need.instances.unwrap_or(1)) > state.settings.max_instances {
            return Err(quota_error("instances"));
        }
        if cores.saturating_add(need.cores.unwrap_or(0)) > state.settings.max_cores {
            return Err(quota_error("cores"));
        }
        if ram.saturating_add(need.ram.unwrap_or(0)) > state.settings.max_ram {
            return Err(quota_error("ram"));
        }
        let refused = |kind: ErrorKind, what: String| Error::Cloud {
            provider: provider.to_string(),
            message: what,
            kind,
            source: None,
        };
        if let Some(ImageRef::Uploaded { external_id, .. }) = &request.image {
            let known = state.images.contains_key(external_id)
                || (uploaded_elsewhere(external_id) && !state.deleted_images.contains(external_id));
            if !known {
                return Err(refused(
                    ErrorKind::NotFound,
                    format!("image {external_id} not found"),
                ));
            }
        }
        let n = state.next_id();
        let az = match request.az {
            Some(az) if state.settings.azs.contains(&az) => Some(az),
            Some(az) => {
                return Err(refused(
                    ErrorKind::Permanent,
                    format!("availability zone {az} is not available"),
                ))
            }
            None if state.settings.azs.is_empty() => None,
            None => {
                let azs = &state.settings.azs;
                let index = usize::try_from(n).unwrap_or(0) % azs.len();
                azs.get(index).cloned()
            }
        };
        let fate = if state.rng.chance(state.settings.faults.timeout_rate) {
            Fate::Hangs
        } else if state.rng.chance(state.settings.faults.boot_failure_rate) {
            Fate::Fails
        } else {
            Fate::Boots
        };
        let image_id = request.image.map(|image| match image {
            ImageRef::Cloud(name) => state
                .images
                .values()
                .find(|i| i.name == name || i.external_id == name)
                .map_or(name, |i| i.external_id.clone()),
            ImageRef::Uploaded { external_id, .. } => external_id,
        });
        let resources = Resources {
            instances: Some(need.instances.unwrap_or(1)),
            ..need.clone()
        };
        let (shape, node_id) = state.shape(
            &request.metadata,
            az.as_deref(),
            image_id.as_deref(),
            resources,
        );
        let now = Instant::now();
        let instance = FakeInstance {
            shape,
            node_id,
            // Capped: `boot-delay: 9223372036854775807` boots in a century.
            ready_at: now + state.settings.boot_delay.min(LONGEST_WAIT),
            fate,
            gone_at: None,
        };
        let snapshot = instance.snapshot(n, now);
        state.insert(n, instance);
        tracing::debug!(provider, external_id = %snapshot.external_id, "fake cloud created server");
        Ok(snapshot)
    }

    /// One server as it is now.
    pub fn get(&self, external_id: &str) -> Option<Instance> {
        let mut state = self.state();
        let now = Instant::now();
        state.purge(now);
        state.get(external_id).map(|(n, i)| i.snapshot(n, now))
    }

    /// When a server becomes active: `None` for a missing server or one that
    /// never will (hanging or failing).
    pub fn active_at(&self, external_id: &str) -> Option<Instant> {
        let state = self.state();
        let (_, instance) = state.get(external_id)?;
        (instance.fate == Fate::Boots).then_some(instance.ready_at)
    }

    /// When a server leaves `Building` (active or failed); `None` for a
    /// missing or hanging server.
    pub fn settles_at(&self, external_id: &str) -> Option<Instant> {
        let state = self.state();
        let (_, instance) = state.get(external_id)?;
        (instance.fate != Fate::Hangs).then_some(instance.ready_at)
    }

    /// Delete a server; a missing one is fine.
    pub fn delete(&self, provider: &str, external_id: &str) -> Result<()> {
        let mut state = self.state();
        state.injected_error(provider, "delete server")?;
        state.delete(external_id, Instant::now());
        Ok(())
    }

    /// Every server in the cloud.
    pub fn instances(&self) -> Vec<Instance> {
        self.instances_page(None, usize::MAX).0
    }

    /// Up to `limit` servers after the server `marker` (by id order), and
    /// the marker of the next page (`None` on the last). A marker that is
    /// no server id of this cloud starts from the first server.
    pub fn instances_page(
        &self,
        marker: Option<&str>,
        limit: usize,
    ) -> (Vec<Instance>, Option<String>) {
        let mut state = self.state();
        let now = Instant::now();
        state.purge(now);
        let start = marker
            .and_then(serial)
            .map_or(Bound::Unbounded, Bound::Excluded);
        let mut page: Vec<Instance> = state
            .instances
            .range((start, Bound::Unbounded))
            .take(limit.saturating_add(1))
            .map(|(n, i)| i.snapshot(*n, now))
            .collect();
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|i| i.external_id.clone())
        } else {
            None
        };
        (page, next)
    }

    /// What the servers use now.
    pub fn used(&self) -> Resources {
        let mut state = self.state();
        state.purge(Instant::now());
        let (instances, cores, ram) = state.used();
        Resources {
            instances: Some(instances),
            cores: Some(cores),
            ram: Some(ram),
            ..Resources::default()
        }
    }

    /// Store an uploaded image; returns its id.
    pub fn upload_image(
        &self,
        provider: &str,
        name: &str,
        metadata: BTreeMap<String, String>,
    ) -> Result<String> {
        let mut state = self.state();
        state.injected_error(provider, "image upload")?;
        let external_id = format!("fake-image-{:08x}", state.next_id());
        state.images.insert(
            external_id.clone(),
            CloudImage {
                external_id: external_id.clone(),
                name: name.to_string(),
                metadata,
            },
        );
        Ok(external_id)
    }

    /// Delete an image; a missing one is fine.
    pub fn delete_image(&self, provider: &str, external_id: &str) -> Result<()> {
        let mut state = self.state();
        state.injected_error(provider, "image delete")?;
        if state.images.remove(external_id).is_some() {
            state.deleted_images.insert(external_id.to_string());
        }
        Ok(())
    }

    /// Every image in the cloud.
    pub fn images(&self) -> Vec<CloudImage> {
        self.state().images.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests;
