//! # nodepool-drivers
//!
//! The cloud drivers of nodepool-rs: `openstack`, `aws` (EC2), `static`
//! (existing hosts over SSH), `kubernetes` and `openshiftpods` (namespaces
//! and pods as nodes) and `fake` (an in-memory cloud for tests and
//! benchmarks). Each
//! driver parses its own provider config and implements
//! [`nodepool_core::provider::Provider`].
#![deny(missing_docs)]
#![warn(unreachable_pub, missing_debug_implementations)]

pub mod aws;
pub mod fake;
pub mod k8s;
pub mod kubernetes;
pub mod openshiftpods;
pub mod openstack;
pub mod registry;
pub mod static_hosts;

pub use registry::register_builtin;

#[cfg(test)]
mod documented_keys_tests;
#[cfg(test)]
mod no_panic_cloud_tests;
#[cfg(test)]
mod no_panic_http_tests;
#[cfg(test)]
mod no_panic_tests;
