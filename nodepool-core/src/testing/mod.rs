//! Conformance suites every backend runs (feature `testing`): one async fn
//! per behaviour, and a suite function that runs them all and reports what
//! it skipped.
//!
//! - [`provider::provider_suite`] checks a
//!   [`Provider`](crate::provider::Provider);
//!   [`wrappers::stacked_provider_suite`] runs it through the wrapper stack.
//! - [`wrappers::wrapper_suite`] checks the provider wrappers around a
//!   backend.
//! - [`registered::registered_suite`] checks a provider's
//!   [`RegisteredHosts`](crate::provider::RegisteredHosts).
//! - [`image_builder::image_builder_suite`] checks an
//!   [`ImageBuilder`](crate::image_builder::ImageBuilder).
//! - [`store::store_suite`] checks a [`NodeStore`](crate::store::NodeStore).
//!
//! [`memory::MemoryProvider`] is the smallest in-core cloud, for tests;
//! [`fuzz::Fuzz`] makes hostile input for the no-panic property tests.

pub mod fuzz;
pub mod image_builder;
pub mod memory;
pub mod provider;
pub mod registered;
pub mod store;
pub mod wrappers;
