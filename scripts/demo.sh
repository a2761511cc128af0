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
if ! "$BIN/advocacy" campaign list --json 2>/dev/null | grep -q '"id": *"spring"'; then
    echo "demo: a referral campaign, 60 days of referrals played through the real rules, and an outreach"
    "$BIN/advocacy" campaign create --file examples/campaign.json
    "$BIN/advocacy" simulate --campaign spring --advocates 40 --seed 7
    "$BIN/advocacy" outreach create --file examples/outreach.json
    ADVOCACY_CONTACT__MAILDIR="${ADVOCACY_CONTACT__MAILDIR:-demo-mail}" "$BIN/advocacy" outreach plan spring-ask
fi
"$BIN/advocacy" metrics --campaign spring

export ADVOCACY_API__PUBLIC_BASE_URL="http://$host:$port"
key="$("$BIN/advocacy" keys create "demo $(date -u +%FT%TZ)" --scope admin --quiet)"
advocate="$("$BIN/python" - <<'PY'
from engine.settings import get_settings
from graph.factory import open_store

store = open_store(get_settings().store)
try:
    codes = store.list_codes(campaign_id="spring")
    print(codes[0].customer_id if codes else "")
finally:
    store.close()
PY
)"
echo
echo "demo: open http://$host:$port/ and sign in with this API key (admin scope; shown once, stored hashed):"
echo
echo "    $key"
echo
if [ -n "$advocate" ]; then
    echo "demo: an advocate's own page ($advocate), a one-time link valid for an hour:"
    echo "    $("$BIN/advocacy" token "$advocate" --ttl 3600 --link)"
    echo "    (\`advocacy token $advocate --link\` makes another)"
fi
echo "demo: API docs at http://$host:$port/docs; call the API with 'Authorization: Bearer <key>'. Ctrl-C stops."
exec "$BIN/advocacy" serve --host "$host" --port "$port"
