#!/usr/bin/env bash
# Throughput with several nodepool-rs launchers on one provider (#20): for
# each N in BENCH_LAUNCHERS, N `nodepool launcher` daemons with the same
# configuration (one fake provider, max-servers 20) on the same ZooKeeper
# chroot, each with its own --state-dir and web port, driven by the
# throughput client (nodepool-bench throughput --launchers N).
#
#   scripts/bench-launchers.sh
#
# Environment:
#   BENCH_LAUNCHERS      launcher counts (default "1 2 3")
#   BENCH_REQUESTS       requests per run (default 1000)
#   BENCH_SKIP_BUILD=1   use the release binaries already built
#   BENCH_SKIP_TXNLOG=1  skip the per-operation breakdown of the writes
#                        (scripts/bench/zk_writes.py on the server's
#                        transaction log)
#   NODEPOOL_TEST_ZK, NODEPOOL_TEST_ZK_TLS, NODEPOOL_TEST_ZK_CA/_CERT/_KEY
#                        a running server (scripts/zookeeper.sh start DIR
#                        writes them); without them one is started here
#
# Prints each run's table and RESULT line, then a summary: requests/s,
# p50/p99, ZooKeeper writes per request, the launchers' summed peak RSS and
# the 1-minute load average before and after each run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
COUNTS=${BENCH_LAUNCHERS:-"1 2 3"}
N=${BENCH_REQUESTS:-1000}
WORK=$(mktemp -d /tmp/nodepool-bench-launchers.XXXXXX)
BENCH="$ROOT/target/release/nodepool-bench"
NODEPOOL="$ROOT/target/release/nodepool"
RESULTS="$WORK/results.jsonl"
OWN_ZK=

log() { echo "bench-launchers: $*" >&2; }

cleanup() {
    if [ -n "$OWN_ZK" ]; then "$ROOT/scripts/zookeeper.sh" stop "$OWN_ZK" >/dev/null || true; fi
    log "files kept in $WORK"
}
trap cleanup EXIT

if [ -z "${NODEPOOL_TEST_ZK_TLS:-}" ] || [ -z "${NODEPOOL_TEST_ZK:-}" ]; then
    OWN_ZK="$WORK/zk"
    "$ROOT/scripts/zookeeper.sh" start "$OWN_ZK" >&2
    # shellcheck disable=SC1091
    source "$OWN_ZK/env"
fi
log "ZooKeeper $NODEPOOL_TEST_ZK_TLS (TLS), $NODEPOOL_TEST_ZK (plain, counters)"

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -q -p nodepool-bench -p nodepool)
fi

for n in $COUNTS; do
    log "$n launcher(s), $N requests"
    "$BENCH" throughput --store zookeeper --daemon "$NODEPOOL" --launchers "$n" \
        --requests "$N" --name "launchers-$n" | tee "$WORK/run.out"
    grep '^RESULT ' "$WORK/run.out" | sed 's/^RESULT //' >>"$RESULTS"
done

python3 - "$RESULTS" <<'EOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print()
print(f"{'launchers':>9} {'requests':>8} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} "
      f"{'ZK writes/req':>13} {'RSS MB (sum)':>12} {'CPU ms/req':>10} {'load before/after':>17}")
for r in runs:
    print(f"{r['launchers']:>9} {r['requests']:>8} {r['requests_per_s']:>8} {r['p50_ms']:>9} "
          f"{r['p99_ms']:>9} {r.get('zk_writes_per_request', '-'):>13} {r['peak_rss_mb']:>12} "
          f"{r.get('launcher_cpu_ms_per_request', '-'):>10} "
          f"{r['load_before']:>8}/{r['load_after']:<8}")
print(f"on {runs[-1]['cores']} cores")
EOF

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
