#!/usr/bin/env bash
# A short, low-rate run of k6.js against a debug host on a free loopback port. It proves the
# script and the host agree (every answer 202, thresholds met at a rate any machine sustains);
# it measures nothing. Bounded: the host is stopped when the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/debug-host.sh
start_debug_host --capacity 2000

BASE_URL="$BASE_URL" START_RATE=20 PEAK_RATE=100 RAMP=2s HOLD=2s COOL=1s \
  timeout 60 "${K6:-k6}" run --quiet k6.js
