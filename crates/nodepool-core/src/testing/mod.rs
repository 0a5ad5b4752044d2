//! Conformance suites every backend runs (feature `testing`).
