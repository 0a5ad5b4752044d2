//! The static_hosts driver.

pub mod config;
