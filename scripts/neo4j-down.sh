#!/usr/bin/env bash
# Stop the server started by scripts/neo4j-up.sh: SIGTERM (clean shutdown via the launcher's
# shutdown hook), wait up to NEO4J_STOP_TIMEOUT (60) seconds, then SIGKILL. Removes the pid file.
# Idempotent: exits 0 when nothing is running (including a stale pid file).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PIDFILE="$ROOT/.services/neo4j.pid"
TIMEOUT="${NEO4J_STOP_TIMEOUT:-60}"
MAIN=neo4jlauncher.Neo4jServer

is_ours() { [[ -n "$1" ]] && tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -q "$MAIN"; }

pid="$(cat "$PIDFILE" 2>/dev/null || true)"
if ! is_ours "$pid"; then
    [[ -n "$pid" ]] && echo "neo4j: not running (removing stale pid file for pid $pid)" \
                    || echo "neo4j: not running"
    rm -f "$PIDFILE"
    exit 0
fi

echo "neo4j: stopping pid $pid"
kill -TERM "$pid" 2>/dev/null || true
start=$SECONDS
while is_ours "$pid" && (( SECONDS - start < TIMEOUT )); do sleep 0.5; done
if is_ours "$pid"; then
    echo "neo4j: still running after ${TIMEOUT}s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    while is_ours "$pid"; do sleep 0.2; done
fi
rm -f "$PIDFILE"
echo "neo4j: stopped ($((SECONDS - start))s)"
