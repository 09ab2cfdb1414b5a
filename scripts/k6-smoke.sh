#!/usr/bin/env bash
# A short, low-rate run of k6.js against a debug host on a free loopback port. It proves the
# script and the host agree (every answer 202, thresholds met at a rate any machine sustains);
# it measures nothing. Bounded: the host is stopped when the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
RUST_LOG=warn ./target/debug/http-spawn --listen "127.0.0.1:$port" --capacity 2000 >"$log" 2>&1 &
host=$!
trap 'kill $host 2>/dev/null || true; wait $host 2>/dev/null || true; rm -f "$log"' EXIT

for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/api/health" >/dev/null && break
  kill -0 $host 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done

BASE_URL="http://127.0.0.1:$port" START_RATE=20 PEAK_RATE=100 RAMP=2s HOLD=2s COOL=1s \
  timeout 60 "${K6:-k6}" run --quiet k6.js
