#!/usr/bin/env bash
# The launcher benchmark side by side with upstream nodepool-launcher 11.0.0:
# the same ZooKeeper (TLS), the same configuration (one fake provider,
# max-servers 20, upstream's fake cloud: 20 instances, 0.1 s boots), the
# same client (nodepool-bench's, which speaks upstream's protocol: submit,
# wait for fulfilment, lock the node, delete the request, in-use, used,
# unlock), the same ZooKeeper counters.
#
#   scripts/bench-upstream.sh
#
# Environment:
#   BENCH_UPSTREAM_REQUESTS  requests for upstream (default 100; it does ~1/s)
#   BENCH_OURS_REQUESTS      request counts for nodepool-rs (default "100 1000")
#   BENCH_SKIP_BUILD=1       use the release binaries already built
#   BENCH_SKIP_TXNLOG=1      skip the per-operation breakdown of the writes
#                            (scripts/bench/zk_writes.py on the server's
#                            transaction log, in the dataDir that
#                            scripts/zookeeper.sh keeps beside the certificates)
#   NODEPOOL_TEST_ZK, NODEPOOL_TEST_ZK_TLS, NODEPOOL_TEST_ZK_CA/_CERT/_KEY
#                            a running server (scripts/zookeeper.sh start DIR
#                            writes them); without them one is started here
#   NODEPOOL_TEST_CACHE      where the venv is kept
#                            (default ${XDG_CACHE_HOME:-$HOME/.cache}/nodepool-rs)
#
# Prints each run's table and RESULT line, then a summary with the ratio.
# Everything it starts is stopped at exit; its files are under a temp dir.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
UPSTREAM_N=${BENCH_UPSTREAM_REQUESTS:-100}
OURS_N=${BENCH_OURS_REQUESTS:-"100 1000"}
CACHE=${NODEPOOL_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodepool-rs}
VENV="$CACHE/venv-nodepool-11.0.0"
WORK=$(mktemp -d /tmp/nodepool-bench-upstream.XXXXXX)
BENCH="$ROOT/target/release/nodepool-bench"
NODEPOOL="$ROOT/target/release/nodepool"
RESULTS="$WORK/results.jsonl"
UPSTREAM_PID=
OWN_ZK=

log() { echo "bench-upstream: $*" >&2; }

cleanup() {
    if [ -n "$UPSTREAM_PID" ] && kill -0 "$UPSTREAM_PID" 2>/dev/null; then
        kill "$UPSTREAM_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$UPSTREAM_PID" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$UPSTREAM_PID" 2>/dev/null || true
    fi
    if [ -n "$OWN_ZK" ]; then "$ROOT/scripts/zookeeper.sh" stop "$OWN_ZK" >/dev/null || true; fi
    log "files kept in $WORK"
}
trap cleanup EXIT

# ZooKeeper: the environment's, or our own.
if [ -z "${NODEPOOL_TEST_ZK_TLS:-}" ] || [ -z "${NODEPOOL_TEST_ZK:-}" ]; then
    OWN_ZK="$WORK/zk"
    "$ROOT/scripts/zookeeper.sh" start "$OWN_ZK" >&2
    # shellcheck disable=SC1091
    source "$OWN_ZK/env"
fi
log "ZooKeeper $NODEPOOL_TEST_ZK_TLS (TLS), $NODEPOOL_TEST_ZK (plain, counters)"

# Upstream nodepool 11.0.0 in a venv.
if [ ! -x "$VENV/bin/nodepool-launcher" ]; then
    log "installing nodepool==11.0.0 into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q nodepool==11.0.0 cachetools
fi

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -q -p nodepool-bench -p nodepool)
fi

# One run of the bench; its RESULT line goes to $RESULTS.
bench() {
    "$BENCH" throughput --store zookeeper "$@" | tee "$WORK/run.out"
    grep '^RESULT ' "$WORK/run.out" | sed 's/^RESULT //' >>"$RESULTS"
}

# --- upstream -----------------------------------------------------------
CHROOT="/bench-upstream-$$-$RANDOM"
WEB_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BENCH" config --chroot "$CHROOT" --web-port "$WEB_PORT" >"$WORK/nodepool.yaml"
cat >"$WORK/clouds.yaml" <<EOF
clouds:
  fake:
    auth:
      username: fake
      password: fake
      project_id: fake
      auth_url: fake
EOF
log "starting upstream nodepool-launcher on $CHROOT ($WORK/nodepool.yaml)"
OS_CLIENT_CONFIG_FILE="$WORK/clouds.yaml" "$VENV/bin/nodepool-launcher" -f \
    -c "$WORK/nodepool.yaml" -p "$WORK/upstream.pid" >"$WORK/upstream.log" 2>&1 &
UPSTREAM_PID=$!
log "upstream launcher pid $UPSTREAM_PID; $UPSTREAM_N requests"
if ! bench --external-pid "$UPSTREAM_PID" --chroot "$CHROOT" \
    --requests "$UPSTREAM_N" --name upstream-11.0.0; then
    tail -n 40 "$WORK/upstream.log" >&2
    exit 1
fi
kill "$UPSTREAM_PID" 2>/dev/null || true
for _ in $(seq 100); do kill -0 "$UPSTREAM_PID" 2>/dev/null || break; sleep 0.2; done
kill -9 "$UPSTREAM_PID" 2>/dev/null || true
UPSTREAM_PID=

# --- nodepool-rs, same server, same client ---------------------------------
for n in $OURS_N; do
    log "nodepool-rs launcher (daemon), $n requests"
    bench --daemon "$NODEPOOL" --requests "$n" --name nodepool-rs
done

# --- summary --------------------------------------------------------------
python3 - "$RESULTS" <<'EOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
up = next(r for r in runs if r["name"].startswith("upstream"))
print()
print(f"{'run':<16} {'requests':>8} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} "
      f"{'RSS MB':>7} {'ZK writes/req':>13} {'vs upstream':>11}")
for r in runs:
    ratio = r["requests_per_s"] / up["requests_per_s"] if up["requests_per_s"] else 0
    print(f"{r['name']:<16} {r['requests']:>8} {r['requests_per_s']:>8} {r['p50_ms']:>9} "
          f"{r['p99_ms']:>9} {r['peak_rss_mb']:>7} {r.get('zk_writes_per_request', '-'):>13} "
          f"{ratio:>10.1f}x")
print(f"load (1 min) at the end: {runs[-1]['load_after']} on {runs[-1]['cores']} cores")
EOF

# --- where the writes go (ZooKeeper's transaction log) ---------------------
ZK_DATA="$(dirname "$(dirname "$NODEPOOL_TEST_ZK_CA")")/data"
if [ "${BENCH_SKIP_TXNLOG:-0}" != 1 ] && [ -d "$ZK_DATA/version-2" ]; then
    mapfile -t RUNS < <(python3 - "$RESULTS" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{r['chroot']}={r['fulfilled']}")
EOF
    )
    "$ROOT/scripts/bench/zk_writes.py" "$ZK_DATA" "${RUNS[@]}"
fi
