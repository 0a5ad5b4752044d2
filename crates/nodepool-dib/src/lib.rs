//! nodepool-dib
