//! Fake driver: cloud.
