#!/usr/bin/env bash
# Runs throw-away OpenSSH servers on loopback ports, as test hosts for the
# static driver (host-key scans, liveness checks).
#
#   scripts/sshd.sh install          apt-get install openssh-server (and the
#                                    client's ssh-keyscan) when missing
#   scripts/sshd.sh start DIR PORT   an ed25519 host key, sshd_config and a
#                                    server on 127.0.0.1:PORT, all in DIR;
#                                    returns once ssh-keyscan gets its key
#   scripts/sshd.sh stop DIR         stops the server started in DIR
#
# Works as root on a fresh Debian 12 machine. The server runs in the
# foreground of a background job (`sshd -D -e`), logs to DIR/sshd.log and
# writes its pid to DIR/sshd.pid.
set -euo pipefail

SSHD=${SSHD:-/usr/sbin/sshd}
START_DEADLINE_SECONDS=${SSHD_START_DEADLINE_SECONDS:-20}

die() {
    echo "sshd.sh: $*" >&2
    exit 1
}

cmd_install() {
    if [ -x "$SSHD" ] && command -v ssh-keyscan >/dev/null && command -v ssh-keygen >/dev/null; then
        echo "sshd.sh: $SSHD and ssh-keyscan already installed"
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have empty package lists.
    if ! apt-cache show openssh-server >/dev/null 2>&1; then
        apt-get update
    fi
    # Do not let the package start the system's own sshd on port 22.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get install -y --no-install-recommends openssh-server openssh-client
    [ -x "$SSHD" ] || die "apt-get installed openssh-server but $SSHD is missing"
}

# Whether ssh-keyscan gets a key from 127.0.0.1:$1.
answers() {
    ssh-keyscan -T 2 -p "$1" -t ed25519 127.0.0.1 2>/dev/null | grep -q ssh-ed25519
}

cmd_start() {
    local dir=${1:-} port=${2:-}
    [ -n "$dir" ] && [ -n "$port" ] || die "usage: sshd.sh start DIR PORT"
    [ -x "$SSHD" ] || die "$SSHD is missing (run: scripts/sshd.sh install)"
    mkdir -p "$dir" /run/sshd
    dir=$(cd "$dir" && pwd)
    if [ -f "$dir/sshd.pid" ] && kill -0 "$(cat "$dir/sshd.pid")" 2>/dev/null; then
        die "an sshd started in $dir is still running (pid $(cat "$dir/sshd.pid"))"
    fi
    if [ ! -f "$dir/hostkey" ]; then
        ssh-keygen -q -t ed25519 -N '' -C "nodepool-test" -f "$dir/hostkey"
    fi
    cat >"$dir/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/hostkey
PidFile $dir/sshd.pid
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile $dir/authorized_keys
EOF
    rm -f "$dir/sshd.pid"
    "$SSHD" -D -e -f "$dir/sshd_config" >>"$dir/sshd.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/sshd.pid"
    local deadline=$((SECONDS + START_DEADLINE_SECONDS))
    until answers "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            die "sshd exited at start; its log ($dir/sshd.log): $(tail -n 5 "$dir/sshd.log")"
        fi
        if [ $SECONDS -ge $deadline ]; then
            kill "$pid" 2>/dev/null || true
            die "sshd on 127.0.0.1:$port did not answer within ${START_DEADLINE_SECONDS}s"
        fi
        sleep 0.1
    done
    echo "sshd.sh: sshd (pid $pid) answers on 127.0.0.1:$port"
}

cmd_stop() {
    local dir=${1:-}
    [ -n "$dir" ] || die "usage: sshd.sh stop DIR"
    [ -f "$dir/sshd.pid" ] || return 0
    local pid
    pid=$(cat "$dir/sshd.pid")
    if kill "$pid" 2>/dev/null; then
        local deadline=$((SECONDS + 10))
        while kill -0 "$pid" 2>/dev/null; do
            [ $SECONDS -lt $deadline ] || { kill -9 "$pid" 2>/dev/null || true; break; }
            sleep 0.05
        done
    fi
    rm -f "$dir/sshd.pid"
}

case "${1:-}" in
install) cmd_install ;;
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
*) die "usage: sshd.sh install | start DIR PORT | stop DIR" ;;
esac
