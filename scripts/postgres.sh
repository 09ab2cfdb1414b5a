#!/usr/bin/env bash
# A throwaway PostgreSQL for the test suite, on a free loopback port, with its files under
# target/postgres. Debian's server is installed when missing. Only the URL goes to stdout, so
# callers can capture it.
#
#   scripts/postgres.sh start        starts it (or finds it running) and prints its URL
#   scripts/postgres.sh url          prints the running one's URL; non-zero if none
#   scripts/postgres.sh stop         stops it, if running
#   scripts/postgres.sh run -- CMD   runs CMD with DATABASE_URL set, starting (and afterwards
#                                    stopping) a server only when DATABASE_URL is not set already
#
# POSTGRES_DURABLE=1 keeps fsync and friends on: turning them off makes tests fast, and would
# make a benchmark measure something no real deployment runs.
# POSTGRES_DIR (an absolute path; default target/postgres) keeps a second server apart from the
# test suite's, as `make bench` does.
# The server speaks TLS (and plain TCP; clients choose with sslmode) with a certificate for
# 127.0.0.1 and localhost signed by a throwaway CA: $dir/tls/ca.pem, which `run` exports as
# DATABASE_SSLROOTCERT. $dir/tls/other-ca.pem is a CA that signed nothing, for tests that a
# wrong root is refused. POSTGRES_TLS=0 turns TLS off, as `make bench` does. POSTGRES_OPTIONS is added to the server's options when
# this script starts it, e.g. `-c shared_preload_libraries=pg_stat_statements`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${POSTGRES_DIR:-$root/target/postgres}
data=$dir/data

# Debian's server binaries: 15 (Debian 12's own) when present, else the newest installed.
find_bin() {
  local bin
  for bin in /usr/lib/postgresql/15/bin $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
    if [ -x "$bin/initdb" ]; then
      echo "$bin"
      return
    fi
  done
  return 1
}

install_server() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "PostgreSQL is missing, and installing it needs root or sudo" >&2; exit 1; }
    sudo=sudo
  fi
  echo "Installing Debian's postgresql package" >&2
  $sudo apt-get update -qq >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
}

# PostgreSQL refuses to run as root, so as root the server runs as the owner of target/postgres.
as_owner() {
  if [ "$(id -u)" -ne 0 ]; then
    "$@"
    return
  fi
  local user
  user=$(stat -c %U "$dir")
  if command -v runuser >/dev/null; then
    runuser -u "$user" -- "$@"
  else
    setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups -- "$@"
  fi
}

# Hands target/postgres to an unprivileged user, and lets that user reach it: the repository may
# sit under a directory such as /root that others cannot traverse.
own_as_root() {
  local user=http-spawn-pg
  if ! id -u "$user" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$user" >&2 || user=nobody
  fi
  chown -R "$user:" "$dir"
  local path=$dir
  while [ "$path" != / ]; do
    path=$(dirname "$path")
    if ! runuser -u "$user" -- test -x "$path" 2>/dev/null; then
      echo "Letting $user traverse $path (chmod o+x)" >&2
      chmod o+x "$path"
    fi
  done
}

# Running means the pid file names a live postgres: after a crash or a container restart the
# file stays behind, and its pid may belong to something else by then. A killed server may also
# linger as a zombie (state Z) where pid 1 reaps nothing, as in many containers.
running() {
  local pid stat
  pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null) || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $stat == *"(postgres) "[!Z]* ]] && [ -s "$dir/port" ]
}

url() {
  running || return 1
  echo "postgres://postgres@127.0.0.1:$(cat "$dir/port")/postgres"
}

# A CA and a server certificate under $dir/tls, made once (openssl comes with Debian's server,
# through ssl-cert).
make_certificates() {
  local tls=$dir/tls
  [ ! -s "$tls/server.key" ] || return 0
  mkdir -p "$tls"
  (
    cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=http-spawn test CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=another CA" \
      -keyout other-ca.key -out other-ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key \
      -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.pem 2>/dev/null
    chmod 600 server.key ca.key other-ca.key
  ) >&2
}

# Sets `started` to 1 when this call started the server, 0 when it was already running.
start() {
  started=0
  mkdir -p "$dir"
  # Two callers starting at once would race for the data directory; the lock is closed for the
  # server itself, which would otherwise hold it for as long as it runs.
  exec 9>"$dir/lock"
  flock 9
  if running; then
    if [ "${POSTGRES_DURABLE:-0}" = 1 ] && [ ! -e "$dir/durable" ]; then
      echo "A non-durable test server is running; run \`$0 stop\` first" >&2
      exit 1
    fi
    exec 9>&-
    return
  fi
  local bin
  bin=$(find_bin) || { install_server; bin=$(find_bin); }
  if [ -e "$data/PG_VERSION" ] && [ "$(cat "$data/PG_VERSION")" != "$(basename "$(dirname "$bin")")" ]; then
    echo "Discarding a cluster made by another PostgreSQL version" >&2
    rm -rf "$data"
  fi
  # A stale pid file: the server would refuse to start while its pid looks alive.
  rm -f "$data/postmaster.pid" "$dir/port" "$dir/durable"
  mkdir -p "$dir/socket"
  [ "${POSTGRES_TLS:-1}" = 0 ] || make_certificates
  [ "$(id -u)" -ne 0 ] || own_as_root
  if [ ! -e "$data/PG_VERSION" ]; then
    # The C locale: the machine's own may not exist, and tests must not depend on it.
    as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >&2
  fi

  local port socket=$dir/socket options
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # A Unix socket path is limited to 107 bytes; the URL uses TCP anyway, so a deep checkout
  # goes without one.
  [ ${#socket} -le 90 ] || socket=""
  options="-h 127.0.0.1 -p $port -k '$socket' -c max_connections=300 -c shared_buffers=128MB"
  if [ "${POSTGRES_DURABLE:-0}" = 1 ]; then
    touch "$dir/durable"
  else
    options+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi
  if [ "${POSTGRES_TLS:-1}" != 0 ]; then
    options+=" -c ssl=on -c ssl_cert_file=$dir/tls/server.pem -c ssl_key_file=$dir/tls/server.key"
  fi
  options+=" ${POSTGRES_OPTIONS:-}"
  if ! as_owner "$bin/pg_ctl" -D "$data" -l "$dir/log" -o "$options" -w start >&2 9>&-; then
    tail -n 20 "$dir/log" >&2
    exit 1
  fi
  echo "$port" >"$dir/port"
  # Databases the test harness made in earlier runs: nobody can be using them before this
  # server started, and each costs a copy of the template on disk.
  echo "SELECT format('DROP DATABASE %I', datname) FROM pg_database WHERE datname LIKE 'hs\_%' \gexec" |
    "$bin/psql" -q -X -d "$(url)" >&2
  started=1
  exec 9>&-
}

stop() {
  running || return 0
  local version
  version=$(cat "$data/PG_VERSION")
  as_owner "/usr/lib/postgresql/$version/bin/pg_ctl" -D "$data" stop -m fast >&2
  rm -f "$dir/port" "$dir/durable"
}

case "${1:-}" in
  start)
    start
    url
    ;;
  stop) stop ;;
  url) url ;;
  run)
    shift
    [ "${1:-}" != -- ] || shift
    [ $# -gt 0 ] || { echo "usage: $0 run -- CMD..." >&2; exit 2; }
    [ -z "${DATABASE_URL:-}" ] || exec "$@"
    start
    if [ "$started" = 1 ]; then
      trap stop EXIT
      trap 'exit 130' INT
      trap 'exit 143' TERM
    fi
    DATABASE_URL=$(url)
    export DATABASE_URL
    if [ "${POSTGRES_TLS:-1}" != 0 ]; then
      DATABASE_SSLROOTCERT=$dir/tls/ca.pem
      export DATABASE_SSLROOTCERT
    fi
    status=0
    "$@" || status=$?
    exit "$status"
    ;;
  *)
    echo "usage: $0 start | stop | url | run -- CMD..." >&2
    exit 2
    ;;
esac
