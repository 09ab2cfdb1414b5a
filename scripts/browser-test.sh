#!/usr/bin/env bash
# The dashboard's end-to-end test: a debug host on a free loopback port, the page at `/` in
# headless Chromium (tests/browser/dashboard.test.mjs). Installs Chromium and the test's npm
# packages when missing. Bounded: the test gives up after 75 s, and the host is stopped when the
# script exits. The screenshot lands in target/browser/dashboard.png (SCREENSHOT_DIR to change).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-chromium.sh

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
RUST_LOG=warn ./target/debug/http-spawn --config http-spawn.toml --listen "127.0.0.1:$port" --capacity 1000 \
  --cache-dir "$PWD/target/module-cache" >"$log" 2>&1 &
host=$!
trap 'kill $host 2>/dev/null || true; wait $host 2>/dev/null || true; rm -f "$log"' EXIT

for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/api/health" >/dev/null && break
  kill -0 $host 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done

status=0
BASE_URL="http://127.0.0.1:$port" SCREENSHOT_DIR="${SCREENSHOT_DIR:-$PWD/target/browser}" \
  timeout 90 node tests/browser/dashboard.test.mjs || status=$?
[ "$status" -eq 0 ] || { echo "host log:" >&2; tail -n 50 "$log" >&2; }
exit "$status"
