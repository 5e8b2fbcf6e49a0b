# Ephemeral PostgreSQL for tests and benchmarks. Source this file, then:
#   pg_start   starts a throwaway cluster on a free loopback port and exports
#              CONVERGE_TEST_PG_URL (a superuser URL; tests create their own databases)
#   pg_stop    stops it and removes its files (safe to call twice; put it in a trap)
# As root, the server runs as the unprivileged `postgres` user (initdb refuses root).

PG_ROOT=""
PG_BIN=""

pg_find_bin() {
  local dir
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return 0
  fi
  for dir in /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
  done
  return 1
}

pg_install_if_missing() {
  if pg_find_bin >/dev/null; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "PostgreSQL not found: installing it with apt-get" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  pg_find_bin >/dev/null || { echo "PostgreSQL 15+ (initdb, pg_ctl) is required and could not be installed" >&2; return 1; }
}

# Every test creates its own database, which PostgreSQL copies through the WAL: keep the WAL
# small (no replicas here) so that a whole run does not hold a gigabyte of it.
PG_SMALL_WAL="-c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=64MB -c min_wal_size=32MB"

pg_start() {
  pg_install_if_missing || return 1
  local port attempt run_as=()
  PG_BIN=$(pg_find_bin)
  PG_ROOT=$(mktemp -d /tmp/converge-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then
    id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres: "$PG_ROOT"
    run_as=(runuser -u postgres --)
  fi
  "${run_as[@]}" "$PG_BIN/initdb" -D "$PG_ROOT/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null || return 1
  # The port is picked free, then bound by the server a moment later: retry if someone took it.
  for attempt in 1 2 3; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    if "${run_as[@]}" "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -l "$PG_ROOT/log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_ROOT -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 $PG_SMALL_WAL" \
      >/dev/null; then
      export CONVERGE_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
      echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
      return 0
    fi
    echo "PostgreSQL did not start (attempt $attempt):" >&2
    tail -5 "$PG_ROOT/log" >&2
    "${run_as[@]}" "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -m immediate -w stop >/dev/null 2>&1 || true
  done
  return 1
}

pg_stop() {
  [ -n "$PG_ROOT" ] || return 0
  # Stop the server before removing its files, even if it was still starting.
  local run_as=()
  [ "$(id -u)" = 0 ] && run_as=(runuser -u postgres --)
  "${run_as[@]}" "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_ROOT"
  PG_ROOT=""
}
