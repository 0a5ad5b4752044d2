#!/usr/bin/env bash
# moto's server (an EC2/S3/EBS API we did not write) for the aws driver's
# tests and for trying the driver by hand.
#
#   scripts/moto.sh install [CACHE]  install moto[server]==5.2.5 into
#                                    CACHE/venv-moto-5.2.5 if missing; prints
#                                    the path of moto_server
#   scripts/moto.sh start DIR        a server on a free loopback port; writes
#                                    DIR/env (source it) with AWS_ENDPOINT_URL,
#                                    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
#   scripts/moto.sh stop DIR         stops the server started in DIR
#
# The tests (nodepool-drivers/tests/aws_*.rs) start their own server from
# NODEPOOL_TEST_MOTO, so their instances outlive the code under test.
set -euo pipefail

MOTO_VERSION=5.2.5
CACHE_DEFAULT=${NODEPOOL_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodepool-rs}

die() {
    echo "moto.sh: $*" >&2
    exit 1
}

moto_bin() {
    echo "$1/venv-moto-$MOTO_VERSION/bin/moto_server"
}

cmd_install() {
    local cache=${1:-$CACHE_DEFAULT} venv bin
    venv="$cache/venv-moto-$MOTO_VERSION"
    bin=$(moto_bin "$cache")
    if [ ! -x "$bin" ]; then
        echo "moto.sh: installing moto[server]==$MOTO_VERSION into $venv" >&2
        mkdir -p "$cache"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "moto[server]==$MOTO_VERSION" >&2
    fi
    [ -x "$bin" ] || die "moto_server missing after install: $bin"
    echo "$bin"
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    local port tries=0
    while [ $tries -lt 200 ]; do
        port=$((20000 + RANDOM % 30000))
        if ! port_in_use "$port"; then
            echo "$port"
            return 0
        fi
        tries=$((tries + 1))
    done
    die "no free port found"
}

cmd_start() {
    local dir=${1:?usage: moto.sh start DIR} bin port deadline
    bin=$(cmd_install)
    mkdir -p "$dir"
    port=$(free_port)
    setsid "$bin" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
    echo $! >"$dir/moto.pid"
    deadline=$((SECONDS + 30))
    until port_in_use "$port"; do
        [ $SECONDS -lt $deadline ] || die "moto did not listen on $port (see $dir/moto.log)"
        sleep 0.2
    done
    cat >"$dir/env" <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
ENV
    echo "moto.sh: moto $MOTO_VERSION on 127.0.0.1:$port; source $dir/env" >&2
}

cmd_stop() {
    local dir=${1:?usage: moto.sh stop DIR} pid
    [ -f "$dir/moto.pid" ] || die "no server started in $dir"
    pid=$(cat "$dir/moto.pid")
    kill "$pid" 2>/dev/null || true
    rm -f "$dir/moto.pid"
}

case "${1:-}" in
install) shift; cmd_install "$@" ;;
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
*) die "usage: moto.sh install [CACHE] | start DIR | stop DIR" ;;
esac
