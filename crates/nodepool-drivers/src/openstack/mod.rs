//! The openstack driver.

pub mod config;
