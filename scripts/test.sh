#!/usr/bin/env bash
# Runs the whole test suite. On a fresh Debian machine it installs what the
# tests need (ZooKeeper, upstream nodepool 11 in a venv, ...), starts the
# services on loopback, runs `cargo test --workspace`, and stops them again.
#
# Environment:
#   NODEPOOL_TEST_CACHE  where venvs and downloads are kept
#                        (default ${XDG_CACHE_HOME:-$HOME/.cache}/nodepool-rs)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=${NODEPOOL_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodepool-rs}
mkdir -p "$CACHE"
RUN_DIR=$(mktemp -d /tmp/nodepool-test.XXXXXX)

log() { printf '[test.sh] %s\n' "$*" >&2; }

cleanup() {
    set +e
    [ -f "$RUN_DIR/zk/zookeeper.pid" ] && "$ROOT/scripts/zookeeper.sh" stop "$RUN_DIR/zk" >/dev/null 2>&1
    rm -rf "$RUN_DIR"
}
trap cleanup EXIT

# Upstream nodepool 11.0.0 (reference for the compatibility tests).
NP_VENV="$CACHE/venv-nodepool-11.0.0"
if [ ! -x "$NP_VENV/bin/nodepool" ]; then
    log "installing nodepool==11.0.0 into $NP_VENV"
    python3 -m venv "$NP_VENV"
    "$NP_VENV/bin/pip" install -q nodepool==11.0.0 cachetools
fi
export NODEPOOL_TEST_UPSTREAM_PYTHON="$NP_VENV/bin/python"

# Zuul 14, the real requestor, for the ZooKeeper compatibility tests.
ZUUL_VENV="$CACHE/venv-zuul-14.3.0"
if [ ! -x "$ZUUL_VENV/bin/python" ] || ! "$ZUUL_VENV/bin/python" -c 'import zuul.zk.nodepool' 2>/dev/null; then
    log "installing zuul==14.3.0 into $ZUUL_VENV"
    python3 -m venv "$ZUUL_VENV"
    "$ZUUL_VENV/bin/pip" install -q zuul==14.3.0
fi
export NODEPOOL_TEST_ZUUL_PYTHON="$ZUUL_VENV/bin/python"
export NODEPOOL_TEST_UPSTREAM_CLI="$NP_VENV/bin/nodepool"

# Upstream's sdist, for its fixture configs (kept in the cache, never committed).
NODEPOOL_UPSTREAM_SDIST=$(NODEPOOL_FIXTURES_DOWNLOAD_ONLY=1 scripts/upstream-fixtures.sh "$CACHE")
export NODEPOOL_UPSTREAM_SDIST

# ZooKeeper with TLS on loopback.
scripts/zookeeper.sh install
scripts/zookeeper.sh start "$RUN_DIR/zk"
# shellcheck disable=SC1091
. "$RUN_DIR/zk/env"

# OpenSSH server for the static driver's tests (they start their own sshd).
scripts/sshd.sh install
export NODEPOOL_TEST_REQUIRE_SSHD=1

# diskimage-builder for the real disk-image-create test; the test reports a
# skip with the reason when it cannot be installed or cannot run here.
if dib=$(scripts/dib.sh "$CACHE/venv-dib"); then
    export NODEPOOL_TEST_DIB="$dib"
else
    log "diskimage-builder unavailable: the real disk-image-create test will skip"
fi

# moto's server for the aws driver's tests (each test starts its own).
NODEPOOL_TEST_MOTO=$(scripts/moto.sh install "$CACHE")
export NODEPOOL_TEST_MOTO
export NODEPOOL_TEST_REQUIRE_MOTO=1

# Binaries that tests start as processes (the reliability suite runs the
# daemon and the OpenStack simulator).
cargo build -p nodepool -p nodepool-openstack-sim

log "running cargo test --workspace"
cargo test --workspace --all-targets
cargo test --workspace --doc
