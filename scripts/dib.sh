#!/bin/bash
# Install diskimage-builder from PyPI into a virtualenv, for the real
# disk-image-create test (nodepool-dib/tests/real_dib.rs).
#
# Usage: scripts/dib.sh [VENV]      (default VENV: ${DIB_VENV:-/opt/dib})
#
# On success prints the path of disk-image-create on stdout (everything
# else goes to stderr), so a test script can do:
#   if dib=$(scripts/dib.sh); then export NODEPOOL_TEST_DIB=$dib; fi
# On failure exits non-zero with the reason on stderr; the test then skips.
set -euo pipefail

venv="${1:-${DIB_VENV:-/opt/dib}}"

if [[ -x "$venv/bin/disk-image-create" ]]; then
    echo "$venv/bin/disk-image-create"
    exit 0
fi

python=$(command -v python3 || true)
if [[ -z "$python" ]]; then
    echo "dib.sh: python3 is not installed" >&2
    exit 1
fi
if ! "$python" -m venv "$venv" >&2; then
    echo "dib.sh: cannot create a virtualenv at $venv (python3-venv missing?)" >&2
    exit 1
fi
if ! "$venv/bin/pip" install --quiet diskimage-builder >&2; then
    echo "dib.sh: pip install diskimage-builder failed (no network or no PyPI mirror?)" >&2
    exit 1
fi
if [[ ! -x "$venv/bin/disk-image-create" ]]; then
    echo "dib.sh: diskimage-builder installed but $venv/bin/disk-image-create is missing" >&2
    exit 1
fi
echo "$venv/bin/disk-image-create"
