#!/usr/bin/env bash
# `make demo`: seed a sample customer network on the embedded store, analyse it, and serve the API and pages.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export ADVOCACY_STORE="${ADVOCACY_STORE:-sqlite:///demo.db}"
host="${HOST:-127.0.0.1}"
port="${PORT:-8000}"
customers="${DEMO_CUSTOMERS:-2000}"

echo "demo: seeding $customers customers into $ADVOCACY_STORE (seed 7; rerunning gives the same network)"
"$BIN/advocacy" generate --customers "$customers" --seed 7
"$BIN/advocacy" stats
echo "demo: analysing the network"
"$BIN/advocacy" analyse
echo
echo "demo: open http://$host:$port/  (API docs at http://$host:$port/docs; Ctrl-C stops)"
exec "$BIN/advocacy" serve --host "$host" --port "$port"
