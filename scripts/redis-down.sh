#!/usr/bin/env bash
# Stop the Redis started by redis-up.sh; does nothing when none is running.
set -uo pipefail
cd "$(dirname "$0")/.."
pidfile=".services/redis.pid"
[ -f "$pidfile" ] || { echo "redis-down: not running"; exit 0; }
pid="$(cat "$pidfile")"
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
fi
rm -f "$pidfile"
echo "redis-down: stopped"
