//! Conformance suites every backend runs (feature `testing`): one async fn
//! per behaviour, and a suite function that runs them all.

pub mod provider;
pub mod store;
