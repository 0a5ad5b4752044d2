//! What the `kubernetes` and `openshiftpods` drivers share: their config,
//! Kubernetes credentials as kubectl reads them, a small REST client and
//! the provider that makes namespaces and pods into nodes.

pub mod config;
mod parse;

pub use config::{EnvVar, Flavor, K8sConfig, K8sLabel, K8sPool, LabelType};
pub use parse::{k8s_provider_view, parse_k8s_provider};

#[cfg(test)]
mod tests;
