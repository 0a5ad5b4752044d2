//! nodepool-drivers
