#!/usr/bin/env bash
# A throwaway PostgreSQL 15 for a short GPU slot on a bare machine with no network and no
# PostgreSQL (see bench/gpu.sh), so the benchmark can run on Redis + PostgreSQL, not SQLite.
# Prepared on a development machine: `make gpu-postgres` packs that machine's server, its
# modules and libraries into .bench/postgres.tar.xz; carry it with the working tree.
# Usage: bench/gpu_postgres.sh start DIR PORT   unpack into DIR, initdb, start on 127.0.0.1:PORT,
#                                               print the SQLAlchemy URL (the only stdout line)
#        bench/gpu_postgres.sh stop DIR          stop it (immediate; errors ignored)
# Run as root, the server runs as `nobody` (or $CLIPMOD_PG_USER): initdb and postgres refuse
# root. Fails (non-zero, the reason on stderr) within about a minute, never hangs.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

ARCHIVE="$ROOT/.bench/postgres.tar.xz"
BIN_REL=root/usr/lib/postgresql/15/bin
DEADLINE=$((SECONDS + 60))

log() { echo "gpu_postgres: $*" >&2; }
die() { log "$*"; exit 1; }
usage() { echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2; }
# Seconds left of the minute `start` may take, into T (at least 3).
left() { T=$((DEADLINE - SECONDS)); [ "$T" -ge 3 ] || die "out of time (60 s)"; }

# Runs a command as RUN_UID:RUN_GID (unset when we are not root: then as ourselves).
RUN_UID="" RUN_GID=""
as_user() {
  if [ -z "$RUN_UID" ]; then
    "$@"
  elif command -v setpriv >/dev/null; then
    setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --clear-groups -- "$@"
  elif command -v runuser >/dev/null; then
    runuser -u "$(id -nu "$RUN_UID")" -- "$@"
  else
    "${PYTHON:-python3}" -c 'import os, sys
os.setgroups([]); os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[1]))
os.execvp(sys.argv[3], sys.argv[3:])' "$RUN_UID" "$RUN_GID" "$@"
  fi
}

pick_user() {
  [ "$(id -u)" = 0 ] || return 0
  local user="${CLIPMOD_PG_USER:-nobody}"
  if ! id -u "$user" >/dev/null 2>&1; then
    user=clipmod-pg
    if ! id -u "$user" >/dev/null 2>&1; then
      command -v useradd >/dev/null || die "no user 'nobody' and no useradd: set CLIPMOD_PG_USER"
      useradd --system --no-create-home --shell /bin/false "$user" >&2 \
        || die "could not create user $user"
    fi
  fi
  RUN_UID=$(id -u "$user") RUN_GID=$(id -g "$user")
  [ "$RUN_UID" != 0 ] || die "user $user is root; PostgreSQL refuses to run as root"
  log "running PostgreSQL as $user ($RUN_UID:$RUN_GID)"
}

# DIR and every folder above it must be traversable by the server's user.
open_path() {
  local dir="$1"
  while :; do
    if ! as_user test -x "$dir"; then
      log "chmod a+x $dir (for the server's user)"
      chmod a+x "$dir"
    fi
    [ "$dir" = / ] && break
    dir=$(dirname "$dir")
  done
}

pg_stop() {  # DIR; as the data folder's owner
  local dir="$1" pid RUN_UID="" RUN_GID=""
  [ -d "$dir/data" ] || return 0
  if [ "$(id -u)" = 0 ] && [ "$(stat -c %u "$dir/data")" != 0 ]; then
    RUN_UID=$(stat -c %u "$dir/data") RUN_GID=$(stat -c %g "$dir/data")
  fi
  if [ -f "$dir/data/postmaster.pid" ] && [ -x "$dir/$BIN_REL/pg_ctl" ]; then
    (cd "$dir" && as_user timeout 10 "$dir/$BIN_REL/pg_ctl" -D "$dir/data" -m immediate -w -t 8 \
      stop >&2) || true
  fi
  if [ -f "$dir/data/postmaster.pid" ]; then  # pg_ctl failed: SIGQUIT is an immediate shutdown
    pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)
    # only if that pid is still our postmaster (a stale file's pid may be anyone's by now)
    if [[ "$pid" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null \
      | grep -qF -- "-D $dir/data"; then
      kill -QUIT "$pid" || true
    fi
  fi
  return 0
}

start() {
  local dir="$1" port="$2" libs tz out rc T
  if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    die "bad port $port"
  fi
  [ -f "$ARCHIVE" ] || die "no $ARCHIVE: run 'make gpu-postgres' and carry it"
  mkdir -p "$dir" || die "cannot create $dir"
  dir=$(cd "$dir" && pwd)
  # Goes into postgresql.conf quoted and into a socket path (at most 107 bytes).
  [[ "$dir" =~ ^/[A-Za-z0-9._/+-]+$ ]] || die "DIR must be a plain path ([A-Za-z0-9._/+-]): $dir"
  [ ${#dir} -le 80 ] || die "DIR too long for a unix socket path: $dir"
  pick_user

  # DIR is emptied below: only an empty one or one of ours (an earlier run, its server stopped).
  if [ -n "$(ls -A "$dir")" ] && [ ! -f "$dir/.gpu_postgres" ]; then
    die "$dir is not empty and not from an earlier run of this script: give another DIR"
  fi
  pg_stop "$dir"
  rm -rf "${dir:?}/root" "${dir:?}/lib" "${dir:?}/data" "${dir:?}/run" "${dir:?}/postgres.log"
  : >"$dir/.gpu_postgres"
  log "unpacking $ARCHIVE into $dir"
  left
  if xz --version >/dev/null 2>&1; then
    timeout "$T" tar -C "$dir" --no-same-owner -xJf "$ARCHIVE" || die "could not unpack $ARCHIVE"
  else  # minimal images may lack xz-utils; Python's lzma reads it too
    log "no xz here: unpacking with ${PYTHON:-python3}"
    timeout "$T" "${PYTHON:-python3}" -c 'import sys, tarfile
with tarfile.open(sys.argv[1], "r:xz") as tar:
    tar.extractall(sys.argv[2], **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))
' "$ARCHIVE" "$dir" || die "could not unpack $ARCHIVE (no xz, and ${PYTHON:-python3} failed)"
  fi
  local bin="$dir/$BIN_REL"
  mkdir -p "$dir/data" "$dir/run"
  : >"$dir/postgres.log"
  chmod 700 "$dir/data"
  if [ -n "$RUN_UID" ]; then
    chown "$RUN_UID:$RUN_GID" "$dir/data" "$dir/run" "$dir/postgres.log"
    open_path "$dir"
  fi
  cd "$dir"  # somewhere the server's user may be

  # Our libstdc++/libgcc_s (only ICU needs them) want glibc >= 2.36: where they do not load,
  # the machine's own are used.
  libs="$dir/lib:$dir/lib/gcc"
  if ! out=$(env LD_LIBRARY_PATH="$libs" "$bin/postgres" --version 2>&1); then
    libs="$dir/lib"
    if ! out=$(env LD_LIBRARY_PATH="$libs" "$bin/postgres" --version 2>&1); then
      die "the carried postgres does not load here (it needs glibc >= 2.34; here:" \
        "$(getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown)): $out"
    fi
    log "using the machine's libstdc++/libgcc_s (ours need a newer glibc)"
  fi
  log "$out"

  # Debian's server reads time zones from /usr/share/zoneinfo; 'UTC' there is a file. Without it
  # timezone=UTC is fatal, so put ours there (we are root) or fall back to the built-in GMT.
  tz=UTC
  if [ ! -e /usr/share/zoneinfo/UTC ]; then
    if [ "$(id -u)" = 0 ] && [ -f "$dir/root/usr/share/zoneinfo/Etc/UTC" ]; then
      log "no /usr/share/zoneinfo/UTC: installing the carried one"
      install -D -m 644 "$dir/root/usr/share/zoneinfo/Etc/UTC" /usr/share/zoneinfo/Etc/UTC
      [ -e /usr/share/zoneinfo/UTC ] \
        || install -m 644 "$dir/root/usr/share/zoneinfo/Etc/UTC" /usr/share/zoneinfo/UTC
    else
      log "no /usr/share/zoneinfo/UTC: the server runs with timezone=GMT"
      tz=GMT
    fi
  fi

  log "initdb"
  left
  as_user env -i PATH=/usr/bin:/bin HOME="$dir" TZ="$tz" LD_LIBRARY_PATH="$libs" \
    timeout "$T" "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C \
    --no-sync --no-instructions >&2 || die "initdb failed (see above)"
  cat >>"$dir/data/postgresql.conf" <<EOF

# bench/gpu_postgres.sh: a throwaway benchmark server, durability off
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/run'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 1GB
jit = off
timezone = '$tz'
log_timezone = '$tz'
EOF

  log "starting on 127.0.0.1:$port"
  rc=0
  left
  as_user env -i PATH=/usr/bin:/bin HOME="$dir" LD_LIBRARY_PATH="$libs" \
    timeout "$T" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t "$((T - 2))" \
    start >&2 || rc=$?
  if [ "$rc" != 0 ]; then
    log "the server did not start (rc $rc); the end of $dir/postgres.log:"
    tail -n 20 "$dir/postgres.log" >&2 || true
    pg_stop "$dir"
    exit 1
  fi
  echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
}

[ $# -ge 1 ] || usage
case "$1" in
  start) [ $# = 3 ] || usage; start "$2" "$3" ;;
  stop)
    [ $# = 2 ] || usage
    if [ -d "$2" ]; then pg_stop "$(cd "$2" && pwd)"; fi
    ;;
  *) usage ;;
esac
