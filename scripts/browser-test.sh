#!/usr/bin/env bash
# The dashboard's end-to-end test: a debug host on a free loopback port, the page at `/` in
# headless Chromium (tests/browser/dashboard.test.mjs). Installs Chromium and the test's npm
# packages when missing. Bounded: the test gives up after 140 s, and the host is stopped when the
# script exits. The screenshots land in target/browser/ (dashboard.png, task.png, tasks.png;
# SCREENSHOT_DIR to change).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-chromium.sh

. scripts/debug-host.sh
# The admin token, for the test's pause and resume of a worker.
export HTTP_SPAWN_ADMIN_TOKEN=browser-test-admin-token-0123456789abcdef
start_debug_host --config http-spawn.toml --capacity 1000

status=0
BASE_URL="$BASE_URL" ADMIN_TOKEN="$HTTP_SPAWN_ADMIN_TOKEN" SCREENSHOT_DIR="${SCREENSHOT_DIR:-$PWD/target/browser}" \
  timeout 160 node tests/browser/dashboard.test.mjs || status=$?
[ "$status" -eq 0 ] || { echo "host log:" >&2; tail -n 50 "$HOST_LOG" >&2; }
exit "$status"
