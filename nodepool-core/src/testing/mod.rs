//! Conformance suites every backend runs (feature `testing`): one async fn
//! per behaviour, and a suite function that runs them all and reports what
//! it skipped.
//!
//! - [`provider::provider_suite`]: a [`Provider`](crate::provider::Provider);
//!   [`wrappers::stacked_provider_suite`] runs it through the wrapper stack.
//! - [`wrappers::wrapper_suite`]: the provider wrappers around a backend.
//! - [`registered::registered_suite`]: a provider's
//!   [`RegisteredHosts`](crate::provider::RegisteredHosts).
//! - [`image_builder::image_builder_suite`]: an
//!   [`ImageBuilder`](crate::image_builder::ImageBuilder).
//! - [`store::store_suite`]: a [`NodeStore`](crate::store::NodeStore).
//!
//! [`memory::MemoryProvider`] is the smallest in-core cloud, for tests.

pub mod image_builder;
pub mod memory;
pub mod provider;
pub mod registered;
pub mod store;
pub mod wrappers;
