#!/usr/bin/env bash
# Runs a throw-away ZooKeeper server for the tests, with TLS (nodepool 11
# refuses plain connections) and a plain port beside it.
#
#   scripts/zookeeper.sh install     apt-get install zookeeper if its jar is missing
#   scripts/zookeeper.sh start DIR   certificates, zoo.cfg and a server in DIR;
#                                    writes DIR/env (source it) with
#                                    NODEPOOL_TEST_ZK, NODEPOOL_TEST_ZK_TLS,
#                                    NODEPOOL_TEST_ZK_CA, _CERT and _KEY
#   scripts/zookeeper.sh stop DIR    stops the server started in DIR
#   scripts/zookeeper.sh restart DIR stops it and starts it again on the
#                                    same ports, data and certificates
#
# Works as root on a fresh Debian 12 machine (Java 17, openssl). Needs no
# netcat: the four-letter words go through bash's /dev/tcp.
set -euo pipefail

JAVA_DIR=/usr/share/java
START_DEADLINE_SECONDS=${ZK_START_DEADLINE_SECONDS:-60}

die() {
    echo "zookeeper.sh: $*" >&2
    exit 1
}

have_zookeeper_jar() {
    [ -f "$JAVA_DIR/zookeeper.jar" ] || compgen -G "$JAVA_DIR/zookeeper-3*.jar" >/dev/null
}

cmd_install() {
    if have_zookeeper_jar; then
        echo "zookeeper.sh: ZooKeeper jar already in $JAVA_DIR"
    else
        export DEBIAN_FRONTEND=noninteractive
        # A fresh machine may have empty package lists.
        if ! apt-cache show zookeeper >/dev/null 2>&1; then
            apt-get update
        fi
        apt-get install -y zookeeper openssl
        have_zookeeper_jar || die "apt-get installed zookeeper but no jar is in $JAVA_DIR"
    fi
    command -v java >/dev/null || die "java is not installed (Java 17 is expected)"
    command -v openssl >/dev/null || die "openssl is not installed"
}

# Whether something listens on 127.0.0.1:$1.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A port nobody listens on, away from the ephemeral range's start.
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

# Sends a four-letter word to 127.0.0.1:$1 and prints the answer.
four_letter_word() {
    local port=$1 word=$2
    (
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        printf '%s' "$word" >&3
        timeout 5 cat <&3
    ) 2>/dev/null
}

make_certificates() {
    local tls=$1
    mkdir -p "$tls"
    (
        cd "$tls"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
            -subj "/CN=nodepool-test-ca" -keyout ca.key -out ca.pem 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
            -keyout server.key -out server.csr 2>/dev/null
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -days 3650 -extfile server.ext -out server.crt 2>/dev/null
        cat server.crt server.key >server.pem
        printf 'extendedKeyUsage=clientAuth\n' >client.ext
        openssl req -newkey rsa:2048 -nodes -subj "/CN=nodepool-test-client" \
            -keyout client.key -out client.csr 2>/dev/null
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -days 3650 -extfile client.ext -out client.crt 2>/dev/null
        rm -f server.csr client.csr server.ext client.ext
        chmod 600 ./*.key server.pem
    )
}

# Starts the server of DIR (zoo.cfg and certificates made) and waits until
# it answers on both ports.
launch() {
    local dir=$1 plain_port=$2 tls_port=$3
    local classpath="$JAVA_DIR/zookeeper.jar"
    # The jar's manifest misses netty's codec and resolver; logging goes
    # through log4j 1.2 to DIR/zookeeper.log.
    for jar in netty-codec.jar netty-resolver.jar netty-transport-native-unix-common.jar \
        slf4j-log4j12.jar log4j-1.2.jar; do
        [ -f "$JAVA_DIR/$jar" ] && classpath="$classpath:$JAVA_DIR/$jar"
    done

    # setsid: the server outlives this script and the shell that ran it.
    setsid java -Xmx256m \
        -Dlog4j.configuration="file:$dir/log4j.properties" \
        -Dzookeeper.admin.enableServer=false \
        -cp "$classpath" \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
        >"$dir/zookeeper.out" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/zookeeper.pid"

    local deadline=$((SECONDS + START_DEADLINE_SECONDS))
    until [ "$(four_letter_word "$plain_port" ruok || true)" = "imok" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$dir/zookeeper.out" "$dir/zookeeper.log" >&2 || true
            die "ZooKeeper exited during start-up (see $dir/zookeeper.log)"
        fi
        if [ $SECONDS -ge $deadline ]; then
            tail -n 30 "$dir/zookeeper.log" >&2 || true
            kill "$pid" 2>/dev/null || true
            die "ZooKeeper did not answer ruok within ${START_DEADLINE_SECONDS}s"
        fi
        sleep 0.2
    done
    until port_in_use "$tls_port"; do
        if [ $SECONDS -ge $deadline ]; then
            kill "$pid" 2>/dev/null || true
            die "ZooKeeper did not open its TLS port $tls_port within ${START_DEADLINE_SECONDS}s"
        fi
        sleep 0.2
    done
}

cmd_start() {
    local dir=${1:-}
    [ -n "$dir" ] || die "usage: $0 start DIR"
    have_zookeeper_jar || die "ZooKeeper is not installed; run: $0 install"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -f "$dir/zookeeper.pid" ] && kill -0 "$(cat "$dir/zookeeper.pid")" 2>/dev/null; then
        die "a server already runs from $dir (pid $(cat "$dir/zookeeper.pid")); stop it first"
    fi

    make_certificates "$dir/tls"
    mkdir -p "$dir/data"
    local plain_port tls_port admin_port
    plain_port=$(free_port)
    tls_port=$(free_port)
    while [ "$tls_port" = "$plain_port" ]; do tls_port=$(free_port); done
    admin_port=0

    cat >"$dir/zoo.cfg" <<EOF
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$dir/data
clientPortAddress=127.0.0.1
clientPort=$plain_port
secureClientPortAddress=127.0.0.1
secureClientPort=$tls_port
maxClientCnxns=0
4lw.commands.whitelist=*
admin.enableServer=false
admin.serverPort=$admin_port
serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory
ssl.keyStore.location=$dir/tls/server.pem
ssl.keyStore.type=PEM
ssl.trustStore.location=$dir/tls/ca.pem
ssl.trustStore.type=PEM
EOF

    cat >"$dir/log4j.properties" <<EOF
log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File=$dir/zookeeper.log
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} [myid:%X{myid}] - %-5p [%t:%C{1}@%L] - %m%n
EOF

    launch "$dir" "$plain_port" "$tls_port"

    cat >"$dir/env" <<EOF
export NODEPOOL_TEST_ZK=127.0.0.1:$plain_port
export NODEPOOL_TEST_ZK_TLS=127.0.0.1:$tls_port
export NODEPOOL_TEST_ZK_CA=$dir/tls/ca.pem
export NODEPOOL_TEST_ZK_CERT=$dir/tls/client.crt
export NODEPOOL_TEST_ZK_KEY=$dir/tls/client.key
EOF
    echo "zookeeper.sh: ZooKeeper (pid $(cat "$dir/zookeeper.pid")) on 127.0.0.1:$plain_port, TLS on 127.0.0.1:$tls_port; source $dir/env"
}

cmd_stop() {
    local dir=${1:-}
    [ -n "$dir" ] || die "usage: $0 stop DIR"
    local pidfile="$dir/zookeeper.pid"
    if [ ! -f "$pidfile" ]; then
        echo "zookeeper.sh: no server was started from $dir"
        return 0
    fi
    local pid
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        local deadline=$((SECONDS + 20))
        while kill -0 "$pid" 2>/dev/null; do
            if [ $SECONDS -ge $deadline ]; then
                kill -9 "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.2
        done
    fi
    rm -f "$pidfile"
    echo "zookeeper.sh: stopped ZooKeeper (pid $pid)"
}

# Stops and starts the server of DIR again on the same ports, data and
# certificates (clients keep their sessions if it is back in time).
cmd_restart() {
    local dir=${1:-}
    [ -n "$dir" ] || die "usage: $0 restart DIR"
    dir=$(cd "$dir" && pwd)
    [ -f "$dir/zoo.cfg" ] || die "no server was set up in $dir; use start"
    local plain_port tls_port
    plain_port=$(sed -n 's/^clientPort=//p' "$dir/zoo.cfg")
    tls_port=$(sed -n 's/^secureClientPort=//p' "$dir/zoo.cfg")
    cmd_stop "$dir"
    launch "$dir" "$plain_port" "$tls_port"
    echo "zookeeper.sh: restarted ZooKeeper (pid $(cat "$dir/zookeeper.pid"))"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start "${2:-}" ;;
stop) cmd_stop "${2:-}" ;;
restart) cmd_restart "${2:-}" ;;
*) die "usage: $0 install | start DIR | stop DIR | restart DIR" ;;
esac
