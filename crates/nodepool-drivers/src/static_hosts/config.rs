//! static_hosts provider configuration.
