#!/usr/bin/env bash
# Makes sure the browser test can run: Debian's Chromium at /usr/bin/chromium, and the test's npm
# packages as locked in tests/browser/package-lock.json (playwright-core, which drives that
# Chromium: its own browser download does not work on a closed network). Idempotent, and quick
# when both are already there.
set -euo pipefail
cd "$(dirname "$0")/../tests/browser"

if [ ! -x /usr/bin/chromium ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2
fi

command -v npm >/dev/null || { echo "npm (Node.js 20 or later) is needed for the browser test" >&2; exit 1; }
# The lock the packages were installed from, kept beside them: a changed lock installs again.
stamp=node_modules/.installed-from-lock
if ! cmp -s package-lock.json "$stamp" 2>/dev/null; then
  npm ci --no-audit --no-fund --loglevel=error >&2
  cp package-lock.json "$stamp"
fi
