//! [`MemoryProvider`]: the smallest cloud, in memory, for tests of the
//! engines and wrappers. It implements only what a driver must (plus
//! instance listing), so the optional operations answer
//! [`Error::Unsupported`](crate::Error::Unsupported) from the trait's
//! defaults.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use crate::provider::{
    Instance, InstancePage, InstanceState, LaunchSpec, Provider, ProviderCapabilities, Resources,
};
use crate::{Error, Result};

/// Instances in a map; every label of every pool uses one instance and one
/// core; a new instance is active at once at `192.0.2.<n>`. A label named
/// `fail` fails to create (a driver error, for the metrics tests).
#[derive(Debug, Default)]
pub struct MemoryProvider {
    name: String,
    next: AtomicU64,
    instances: Mutex<BTreeMap<String, Instance>>,
}

impl MemoryProvider {
    /// An empty cloud for provider `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// How many instances exist.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no instance exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Instance>> {
        self.instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Provider for MemoryProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities {
            instance_listing: true,
            ..ProviderCapabilities::default()
        }
    }

    async fn label_resources(&self, _pool: &str, label: &str) -> Result<Resources> {
        if label == "fail" {
            return Err(Error::NotFound {
                kind: "label",
                id: format!("{}/{label}", self.name),
            });
        }
        Ok(Resources {
            instances: Some(1),
            cores: Some(1),
            ram: None,
            ..Resources::default()
        })
    }

    async fn create_instance(&self, spec: &LaunchSpec) -> Result<Instance> {
        let resources = self.label_resources(&spec.pool, &spec.label).await?;
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let instance = Instance {
            external_id: format!("mem-{n:08}"),
            state: Some(InstanceState::Active),
            metadata: spec.metadata.clone(),
            interface_ip: Some(format!("192.0.2.{}", n % 250 + 1)),
            az: spec.az.clone(),
            resources,
            ..Instance::default()
        };
        self.lock()
            .insert(instance.external_id.clone(), instance.clone());
        Ok(instance)
    }

    async fn get_instance(&self, external_id: &str) -> Result<Option<Instance>> {
        Ok(self.lock().get(external_id).cloned())
    }

    async fn delete_instance(&self, external_id: &str) -> Result<()> {
        self.lock().remove(external_id);
        Ok(())
    }

    async fn list_instances_page(
        &self,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<InstancePage> {
        let all = self.lock();
        let after = |id: &String| marker.map_or(true, |m| id.as_str() > m);
        let instances: Vec<Instance> = all
            .iter()
            .filter(|(id, _)| after(id))
            .take(limit.max(1))
            .map(|(_, i)| i.clone())
            .collect();
        let more = all.keys().filter(|id| after(id)).count() > instances.len();
        let next = more
            .then(|| instances.last().map(|i| i.external_id.clone()))
            .flatten();
        Ok(InstancePage { instances, next })
    }
}
