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

# Kubernetes clients we did not write, for kube-sim's tests: Debian's kubectl
# (package kubernetes-client, 1.20) and the Python kubernetes client. When
# another package owns /usr/bin/kubectl (e.g. google-cloud-sdk's kubectl),
# Debian's package is unpacked into the cache instead of installed.
KUBECTL_DEB_DIR="$CACHE/kubernetes-client"
if ! dpkg -s kubernetes-client >/dev/null 2>&1 && ! apt-cache show kubernetes-client >/dev/null 2>&1; then
    apt-get update -q >/dev/null
fi
if dpkg -s kubernetes-client >/dev/null 2>&1; then
    NODEPOOL_TEST_KUBECTL=/usr/bin/kubectl
elif [ ! -e /usr/bin/kubectl ]; then
    log "installing kubernetes-client"
    apt-get install -y -q kubernetes-client >/dev/null
    NODEPOOL_TEST_KUBECTL=/usr/bin/kubectl
else
    if [ ! -x "$KUBECTL_DEB_DIR/root/usr/bin/kubectl" ]; then
        log "unpacking Debian's kubernetes-client into $KUBECTL_DEB_DIR"
        mkdir -p "$KUBECTL_DEB_DIR"
        (cd "$KUBECTL_DEB_DIR" && apt-get download kubernetes-client 2>/dev/null &&
            dpkg-deb -x kubernetes-client_*.deb root)
    fi
    NODEPOOL_TEST_KUBECTL="$KUBECTL_DEB_DIR/root/usr/bin/kubectl"
fi
export NODEPOOL_TEST_KUBECTL
KUBE_VENV="$CACHE/venv-kube"
KUBE_CLIENT_VERSION=37.0.3  # what upstream nodepool 11's venv resolves to
if ! "$KUBE_VENV/bin/python" -c "import kubernetes, sys; sys.exit(kubernetes.__version__ != '$KUBE_CLIENT_VERSION')" 2>/dev/null; then
    log "installing kubernetes==$KUBE_CLIENT_VERSION into $KUBE_VENV"
    python3 -m venv "$KUBE_VENV"
    "$KUBE_VENV/bin/pip" install -q "kubernetes==$KUBE_CLIENT_VERSION"
fi
export NODEPOOL_TEST_KUBE_PYTHON="$KUBE_VENV/bin/python"
# Upstream nodepool 11 runs against kube-sim with kubernetes 31.0.0 first on
# its PYTHONPATH: with the 37.x its venv resolves to, createNamespace fails
# (pydantic rejects the RoleBinding's `userNames`).
UPSTREAM_KUBE_PATH="$CACHE/kubernetes-31.0.0"
if [ ! -f "$UPSTREAM_KUBE_PATH/kubernetes/__init__.py" ]; then
    log "installing kubernetes==31.0.0 into $UPSTREAM_KUBE_PATH (for upstream's drivers)"
    "$KUBE_VENV/bin/pip" install -q --no-deps --target "$UPSTREAM_KUBE_PATH" kubernetes==31.0.0
fi
export NODEPOOL_TEST_UPSTREAM_KUBE_PYTHONPATH="$UPSTREAM_KUBE_PATH"
export NODEPOOL_TEST_REQUIRE_KUBE_CLIENTS=1

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
# daemon and the OpenStack simulator; the Kubernetes drivers' tests kube-sim).
cargo build -p nodepool -p nodepool-openstack-sim -p nodepool-kube-sim

log "running cargo test --workspace"
cargo test --workspace --all-targets
cargo test --workspace --doc
