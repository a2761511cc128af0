#!/usr/bin/env bash
# Start a throwaway Redis on loopback for development and tests (Debian's redis-server).
# Port from REDIS_PORT (default 6390, away from a system Redis on 6379). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${REDIS_PORT:-6390}"
dir=".services/redis"
pidfile=".services/redis.pid"
mkdir -p "$dir"

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-up: installing Debian's redis-server" >&2
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-up: redis-server is missing; run: sudo apt-get install redis-server" >&2
    exit 1
  fi
fi

if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && redis-cli -p "$port" ping >/dev/null 2>&1; then
  echo "redis-up: already running on 127.0.0.1:$port"
  exit 0
fi
rm -f "$pidfile"

redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --pidfile "$PWD/$pidfile" \
  --dir "$PWD/$dir" --logfile "$PWD/.services/redis.log" --save "" --appendonly no >/dev/null

for _ in $(seq 1 100); do
  if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
    echo "redis-up: ready redis://127.0.0.1:$port/0"
    exit 0
  fi
  sleep 0.1
done
echo "redis-up: Redis did not answer on port $port within 10 s" >&2
tail -n 20 .services/redis.log >&2 || true
exit 1
