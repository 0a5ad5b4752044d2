#!/usr/bin/env bash
# The reliability suite (doc/reliability.md).
#
#   scripts/reliability.sh short   the bounded form .ci/run can afford: the
#                                  integration tests of nodepool-reliability
#   scripts/reliability.sh long    the issue's numbers: 1,000 requests and
#                                  20 SIGKILLs on the embedded store and on
#                                  ZooKeeper (two launchers, one killed),
#                                  ZooKeeper restarts, cloud faults; the
#                                  `nodepool launcher` daemon as shipped;
#                                  20 SIGKILLs of `nodepool builder`
#                                  mid-build and mid-upload on each store;
#                                  three launchers on one provider, 10
#                                  SIGKILLs among them, on each store
#
# Needs a ZooKeeper for the zookeeper runs: NODEPOOL_TEST_ZK_TLS and friends
# (scripts/zookeeper.sh start DIR; source DIR/env). Reports go to
# ${RELIABILITY_OUT:-target/reliability}/*.json; exits non-zero when a run
# breaks an invariant.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-short}
cargo build -p nodepool -p nodepool-openstack-sim -p nodepool-reliability || exit 2
case "$mode" in
short)
    exec cargo test -p nodepool-reliability
    ;;
long)
    out=${RELIABILITY_OUT:-target/reliability}
    mkdir -p "$out"
    chaos=target/debug/nodepool-chaos
    seed=${SEED:-20261122}
    status=0
    run() {
        local name=$1
        shift
        echo "== $name: nodepool-chaos $*"
        local start=$SECONDS
        "$chaos" "$@" --seed "$seed" --json --work-dir "$out/$name" >"$out/$name.json"
        local rc=$?
        echo "   exit $rc after $((SECONDS - start)) s; report $out/$name.json"
        [ $rc -eq 0 ] || status=1
    }
    run crash-embedded crash --store embedded --requests 1000 --kills 20
    run crash-zookeeper crash --store zookeeper --requests 1000 --kills 20 --launchers 2
    run zk-restart zk-restart --restarts 3 --requests 1000 --launchers 2
    run faults faults --store embedded --requests 1000 --rate 0.1
    run builder-kill-embedded builder-kill --store embedded --kills 20
    run builder-kill-zookeeper builder-kill --store zookeeper --kills 20
    run active-active-zookeeper active-active --store zookeeper --requests 300 --kills 10
    run active-active-embedded active-active --store embedded --requests 300 --kills 10
    exit $status
    ;;
*)
    echo "usage: $0 short|long" >&2
    exit 2
    ;;
esac
