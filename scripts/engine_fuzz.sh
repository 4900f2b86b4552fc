#!/usr/bin/env bash
# The engine fuzz's long run: serve the default model under one speculation mode on 127.0.0.1:8000, fuzz it for
# MINUTES (loadtest/engine_fuzz.py), write results/engine_fuzz/<mode>.json, stop the server.
#   bash scripts/engine_fuzz.sh [auto|ngram|off] [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-auto}"
MINUTES="${2:-10}"
mkdir -p results/engine_fuzz
CONFIG="$(mktemp --suffix=.yaml)"
printf 'engine:\n  speculation:\n    mode: %s\n' "$MODE" > "$CONFIG"
.venv/bin/serve-app serve --config "$CONFIG" > "results/engine_fuzz/$MODE.server.log" 2>&1 &
SERVER=$!
trap 'kill -INT $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -f "$CONFIG"' EXIT
for _ in $(seq 300); do
  curl -sf -m 5 127.0.0.1:8000/health >/dev/null && break
  kill -0 $SERVER 2>/dev/null || { echo "server exited; see results/engine_fuzz/$MODE.server.log"; exit 1; }
  sleep 2
done
.venv/bin/python -m loadtest.engine_fuzz --url http://127.0.0.1:8000 --minutes "$MINUTES" --label "speculation $MODE" \
  --out "results/engine_fuzz/$MODE.json"
