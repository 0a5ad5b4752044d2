//! The fake cloud driver: in-memory instances, upstream's fake limits.

pub mod cloud;
pub mod config;
pub mod provider;
