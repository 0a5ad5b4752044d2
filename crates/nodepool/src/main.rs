//! The `nodepool` command.
fn main() {}
