#!/usr/bin/env bash
# `make test`: install what the tests need, start Neo4j and Redis, lint, run every test, and stop the
# services again whatever happens. Extra arguments go to pytest (e.g. `make test ARGS="-m 'not slow'"`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v javac >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "test: need root (or sudo) for: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The widget's type check and its bundle-is-the-build check need the pinned tools of frontend/ (npm registry).
if command -v npm >/dev/null 2>&1; then
  echo "test: npm ci in frontend/ (the widget's type check and build check)"
  (cd frontend && npm ci --no-audit --no-fund --loglevel=error)
else
  echo "test: npm not found: the widget's type check and build check will be skipped" >&2
fi

cleanup() {
  status=$?
  scripts/neo4j-down.sh || true
  scripts/redis-down.sh || true
  exit "$status"
}
trap cleanup EXIT INT TERM

scripts/redis-up.sh
NEO4J_START_TIMEOUT="${NEO4J_START_TIMEOUT:-300}" scripts/neo4j-up.sh

export ADVOCACY_TEST_NEO4J_URL="bolt://127.0.0.1:${NEO4J_BOLT_PORT:-7687}"
export ADVOCACY_TEST_REDIS_URL="redis://127.0.0.1:${REDIS_PORT:-6390}/0"
export ADVOCACY_TEST_CHROMIUM=/usr/bin/chromium

echo "test: ruff"
"$BIN/ruff" check .
echo "test: mypy"
"$BIN/mypy" graph engine api bench tests
echo "test: pytest"
"$BIN/pytest" -p no:cacheprovider "$@"
