//! nodepool-zk
