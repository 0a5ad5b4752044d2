#!/usr/bin/env bash
# Runs kube-sim, the Kubernetes API simulator, for manual use: builds it and
# execs it with the given arguments. It prints `READY <url>` and
# `KUBECONFIG <path>` once it listens. Example:
#   scripts/kube-sim.sh --port 6443 --kubeconfig /tmp/kube-sim/kubeconfig \
#       --state-file /tmp/kube-sim/state.json &
#   kubectl --kubeconfig /tmp/kube-sim/kubeconfig get namespaces
# (kubectl create/apply need --validate=false: kube-sim serves no OpenAPI.)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p nodepool-kube-sim
exec "${CARGO_TARGET_DIR:-target}/debug/kube-sim" "$@"
