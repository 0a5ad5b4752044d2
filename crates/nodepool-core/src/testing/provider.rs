//! The provider conformance suite.
