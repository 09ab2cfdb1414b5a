# Sourced by the scripts that test a real host: `start_debug_host ARGS...` starts
# target/debug/http-spawn with ARGS on a free loopback port (compiled modules cached under
# target/, tasks in a SQLite store of its own, removed at the end), stops it when the calling
# script exits, waits until it answers, and sets BASE_URL and HOST_LOG. A host that dies or
# does not answer within 30 s ends the script, log shown.

start_debug_host() {
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  HOST_LOG=$(mktemp)
  STORE_DIR=$(mktemp -d)
  RUST_LOG=warn ./target/debug/http-spawn --listen "127.0.0.1:$port" \
    --cache-dir "$PWD/target/module-cache" --store "sqlite:$STORE_DIR/tasks.db" "$@" \
    >"$HOST_LOG" 2>&1 &
  HOST_PID=$!
  trap 'kill $HOST_PID 2>/dev/null || true; wait $HOST_PID 2>/dev/null || true; rm -rf "$HOST_LOG" "$STORE_DIR"' EXIT
  BASE_URL="http://127.0.0.1:$port"
  for _ in $(seq 300); do
    curl -sf "$BASE_URL/api/health" >/dev/null && return 0
    kill -0 "$HOST_PID" 2>/dev/null || { cat "$HOST_LOG" >&2; exit 1; }
    sleep 0.1
  done
  echo "the host did not answer within 30 s" >&2
  cat "$HOST_LOG" >&2
  exit 1
}
