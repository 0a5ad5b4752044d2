#!/usr/bin/env bash
# Download upstream nodepool 11.0.0's sdist into a cache directory, extract
# it, and run the fixture-loading test against it.
#
#   scripts/upstream-fixtures.sh [CACHE_DIR]
#
# CACHE_DIR defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/nodepool-rs. Upstream's
# files stay in the cache; nothing is copied into the repository. With
# NODEPOOL_FIXTURES_DOWNLOAD_ONLY=1 the script only prints the extracted path.
set -euo pipefail

VERSION=11.0.0
CACHE_DIR=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/nodepool-rs}
SDIST_DIR="$CACHE_DIR/nodepool-$VERSION"

if [ ! -d "$SDIST_DIR/nodepool/tests/fixtures" ]; then
    mkdir -p "$CACHE_DIR"
    if [ -x /opt/np11/bin/pip ]; then
        PIP=(/opt/np11/bin/pip)
    else
        PIP=(python3 -m pip)
    fi
    "${PIP[@]}" download --no-binary :all: --no-deps "nodepool==$VERSION" -d "$CACHE_DIR" >&2
    tar -xzf "$CACHE_DIR/nodepool-$VERSION.tar.gz" -C "$CACHE_DIR"
fi

if [ "${NODEPOOL_FIXTURES_DOWNLOAD_ONLY:-0}" = 1 ]; then
    echo "$SDIST_DIR"
    exit 0
fi

cd "$(dirname "$0")/.."
NODEPOOL_UPSTREAM_SDIST="$SDIST_DIR" exec cargo test -p nodepool --test upstream_fixtures -- --nocapture
