//! What the `kubernetes` and `openshiftpods` drivers share: their config,
//! Kubernetes credentials as kubectl reads them, a small REST client and
//! the provider that makes namespaces and pods into nodes.

pub mod client;
pub mod config;
pub mod error;
pub mod kubeconfig;
pub mod objects;
mod observe;
mod parse;
pub mod provider;
pub mod quota;

pub use client::{KubeClient, ObjectList, WatchEvent};
pub use config::{EnvVar, Flavor, K8sConfig, K8sLabel, K8sPool, LabelType};
pub use error::KubeError;
pub use kubeconfig::Credentials;
pub use parse::{k8s_provider_view, parse_k8s_provider};
pub use provider::K8sProvider;

use std::path::Path;
use std::sync::Arc;

use nodepool_core::config::ProviderConfig;

/// Build the provider of a config either driver parsed: its `context`'s
/// credentials (see [`kubeconfig`]) and a client. No API call is made
/// until the provider is used.
pub fn connect(
    config: &ProviderConfig,
) -> nodepool_core::Result<Arc<dyn nodepool_core::provider::Provider>> {
    let typed = Arc::new(config.driver_config_as::<K8sConfig>()?.clone());
    let env = |k: &str| std::env::var(k).ok();
    let credentials = kubeconfig::load(
        typed.context.as_deref(),
        &env,
        Path::new(kubeconfig::SERVICE_ACCOUNT_DIR),
    )
    .map_err(|e| e.into_core(&config.name))?;
    let client = KubeClient::new(credentials).map_err(|e| e.into_core(&config.name))?;
    Ok(Arc::new(K8sProvider::new(typed, client)))
}

#[cfg(test)]
mod tests;
