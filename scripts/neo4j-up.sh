#!/usr/bin/env bash
# Start the embedded Neo4j Community server (tools/neo4j-server) in the background.
#
#   bash scripts/neo4j-up.sh
#
# Builds the launcher with Maven when target/ is missing or older than pom/src (the first build
# downloads ~125 MB of jars from Maven Central), starts it with nohup, writes .services/neo4j.pid,
# logs to .services/neo4j.log, and waits until the ready line is logged AND Bolt accepts TCP.
# Idempotent: exits 0 if our server is already running on the port.
#
# Env: NEO4J_BOLT_PORT (7687)  NEO4J_HEAP (2g)  NEO4J_PAGECACHE (1g)
#      NEO4J_DATA_DIR (.services/neo4j)  NEO4J_START_TIMEOUT (180, seconds)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PORT="${NEO4J_BOLT_PORT:-7687}"
HEAP="${NEO4J_HEAP:-2g}"
TIMEOUT="${NEO4J_START_TIMEOUT:-180}"
export NEO4J_DATA_DIR="${NEO4J_DATA_DIR:-$ROOT/.services/neo4j}"
MOD="$ROOT/tools/neo4j-server"
SERVICES="$ROOT/.services"
PIDFILE="$SERVICES/neo4j.pid"
LOG="$SERVICES/neo4j.log"
MAIN=neo4jlauncher.Neo4jServer
STAMP="$MOD/target/.build-stamp"

mkdir -p "$SERVICES"

# Is $1 a live process running our launcher? (guards against stale pid files and pid reuse)
is_ours() { [[ -n "$1" ]] && tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -q "$MAIN"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

pid="$(cat "$PIDFILE" 2>/dev/null || true)"
if is_ours "$pid"; then
    if port_open; then
        echo "neo4j: already running (pid $pid) on bolt://127.0.0.1:$PORT"
        exit 0
    fi
    echo "neo4j: pid $pid is running but port $PORT is closed (still starting, or started on" \
         "another port?). Run scripts/neo4j-down.sh first." >&2
    exit 1
fi
[[ -n "$pid" ]] && { echo "neo4j: removing stale pid file (pid $pid is gone or not ours)"; rm -f "$PIDFILE"; }
if port_open; then
    echo "neo4j: port $PORT is already in use by another process; set NEO4J_BOLT_PORT." >&2
    exit 1
fi

# --- build if needed ------------------------------------------------------------------------
if [[ ! -f "$STAMP" || -n "$(find "$MOD/pom.xml" "$MOD/src" -newer "$STAMP" -print -quit)" ]]; then
    echo "neo4j: building launcher (mvn package; the first build downloads jars and may take minutes)"
    start=$SECONDS
    build_log="$SERVICES/neo4j-build.log"
    (cd "$MOD" && mvn -B -q package) >"$build_log" 2>&1 &
    mvn_pid=$!
    while kill -0 "$mvn_pid" 2>/dev/null; do
        sleep 5
        kill -0 "$mvn_pid" 2>/dev/null && printf '  ... building (%ss)\n' $((SECONDS - start))
    done
    if ! wait "$mvn_pid"; then
        echo "neo4j: build FAILED; last lines of $build_log:" >&2
        tail -n 40 "$build_log" >&2
        exit 1
    fi
    touch "$STAMP"
    echo "neo4j: built in $((SECONDS - start))s"
fi

# --- start ----------------------------------------------------------------------------------
[[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.prev"
echo "neo4j: starting on bolt://127.0.0.1:$PORT (heap $HEAP, data $NEO4J_DATA_DIR, log $LOG)"
export NEO4J_BOLT_PORT="$PORT"
# SIGINT is ignored so a Ctrl-C while this script waits doesn't kill the server; SIGTERM stops it.
(
    trap '' INT
    exec nohup java -Xms"$HEAP" -Xmx"$HEAP" \
        -XX:+UseG1GC -XX:-OmitStackTraceInFastThrow -XX:+DisableExplicitGC \
        -Djdk.nio.maxCachedBufferSize=1024 -Dio.netty.tryReflectionSetAccessible=true \
        -Dlog4j2.disable.jmx=true \
        --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED \
        --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang=ALL-UNNAMED \
        -cp "$MOD/target/classes:$MOD/target/lib/*" "$MAIN" "$NEO4J_DATA_DIR"
) </dev/null >"$LOG" 2>&1 &
pid=$!
echo "$pid" >"$PIDFILE"

start=$SECONDS
while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "neo4j: process $pid exited during startup; last lines of $LOG:" >&2
        tail -n 40 "$LOG" >&2
        rm -f "$PIDFILE"
        exit 1
    fi
    if grep -q "neo4j-server: ready bolt://127.0.0.1:$PORT" "$LOG" && port_open; then
        echo "neo4j: ready on bolt://127.0.0.1:$PORT (pid $pid, $((SECONDS - start))s)"
        exit 0
    fi
    if (( SECONDS - start >= TIMEOUT )); then
        echo "neo4j: not ready after ${TIMEOUT}s (pid $pid left running; stop it with scripts/neo4j-down.sh). Last lines of $LOG:" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
    sleep 1
done
