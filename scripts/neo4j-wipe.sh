#!/usr/bin/env bash
# Stop the server (if running) and delete its data folder, for a fresh database on next start.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${NEO4J_DATA_DIR:-$ROOT/.services/neo4j}"
bash "$ROOT/scripts/neo4j-down.sh"
[[ -n "$DATA" && "$DATA" != "/" ]] || { echo "neo4j: refusing to wipe '$DATA'" >&2; exit 1; }
rm -rf -- "$DATA"
echo "neo4j: wiped $DATA"
