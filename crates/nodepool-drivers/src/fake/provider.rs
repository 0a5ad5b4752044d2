//! Fake driver: provider.
