#!/bin/sh
# Build the API documentation of every crate of the workspace and fail on any
# rustdoc warning (broken intra-doc links, missing docs in crates that deny
# them, bad code-block attributes). Doctests are run by `cargo test`.
set -eu
cd "$(dirname "$0")/.."
RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" exec cargo doc --workspace --no-deps "$@"
