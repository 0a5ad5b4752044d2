//! Fake driver: config.
