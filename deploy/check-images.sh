#!/usr/bin/env bash
# Builds the three images of deploy/ on a machine that cannot reach an image
# registry, and checks what they promise. Run by `scripts/check-compose.sh
# --images`, or on its own. Needs root (debootstrap), a Docker engine, Debian's
# apt mirror and the npm registry; takes a few minutes the first time.
#
# What stands in for what:
#   debian:bookworm-slim   a debootstrap --variant=minbase bookworm, imported
#   node:20-bookworm-slim  the same plus this machine's node 20 and npm
#   the Rust builder stage a bmm binary already built here ($BMM_BIN, default
#                          $CARGO_TARGET_DIR/{release,debug}/bmm); the real
#                          stage (rust image, cache mounts) cannot run here
#   RUN --mount=type=cache dropped: Docker 20.10 without buildx has only the
#                          legacy builder
# Everything else, every apt-get, useradd, npm ci, COPY and check in the
# Dockerfiles, runs as written. The images are tagged bmm-check/*; the
# containers this script starts carry the label bmm-check and are removed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG=bmm-check
TARGET="${CARGO_TARGET_DIR:-$HOME/.cache/bmm-target}"
BMM_BIN="${BMM_BIN:-}"
if [ -z "$BMM_BIN" ]; then
  for b in "$TARGET/release/bmm" "$TARGET/debug/bmm"; do
    [ -x "$b" ] && { BMM_BIN="$b"; break; }
  done
fi

failures=0
ok() { printf '  ok    %s\n' "$*"; }
fail() { printf '  FAIL  %s\n' "$*"; failures=$((failures + 1)); }
say() { printf '[check-images] %s\n' "$*" >&2; }
die() { printf '[check-images] error: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap)"
docker info >/dev/null 2>&1 || die "no Docker engine answers"
if [ -z "$BMM_BIN" ] || [ ! -x "$BMM_BIN" ]; then die "no bmm binary: cargo build -p bmm (or set BMM_BIN)"; fi
command -v node >/dev/null || die "node is needed for the node stand-in"
node --version | grep -q '^v20\.' || die "the node stand-in must be node 20 (got $(node --version))"

WORK="$(mktemp -d)"
cleanup() {
  docker ps -aq --filter label=bmm-check | xargs -r docker rm -f >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- stand-in base images ---------------------------------------------------

# A CA bundle to trust inside the stand-ins, for networks whose TLS is
# intercepted by a proxy (the real images trust what Debian ships).
HOST_CA=/etc/ssl/certs/ca-certificates.crt

if ! docker image inspect "$TAG/debian:bookworm-slim" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || {
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
  }
  say "debootstrap bookworm (minbase)"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
  rm -f "$WORK"/rootfs/var/cache/apt/archives/*.deb
  tar -C "$WORK/rootfs" -c . | docker import - "$TAG/debian:bookworm-slim" >/dev/null
  rm -rf "$WORK/rootfs"
fi

if ! docker image inspect "$TAG/node:20-bookworm-slim" >/dev/null 2>&1; then
  say "node 20 stand-in from $(command -v node)"
  node_bin="$(readlink -f "$(command -v node)")"
  npm_dir="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")"
  mkdir -p "$WORK/node/usr/local/bin" "$WORK/node/usr/local/lib/node_modules" "$WORK/node/usr/local/etc" "$WORK/node/etc/ssl"
  cp "$node_bin" "$WORK/node/usr/local/bin/node"
  cp -a "$npm_dir" "$WORK/node/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$WORK/node/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$WORK/node/usr/local/bin/npx"
  printf 'FROM %s/debian:bookworm-slim\nCOPY . /\nCMD ["node"]\n' "$TAG" >"$WORK/Dockerfile.standin"
  if [ -f "$HOST_CA" ]; then
    cp "$HOST_CA" "$WORK/node/etc/ssl/host-ca-bundle.crt"
    echo "cafile=/etc/ssl/host-ca-bundle.crt" >"$WORK/node/usr/local/etc/npmrc"
    echo "ENV NODE_EXTRA_CA_CERTS=/etc/ssl/host-ca-bundle.crt" >>"$WORK/Dockerfile.standin"
  fi
  DOCKER_BUILDKIT=0 docker build -q -f "$WORK/Dockerfile.standin" -t "$TAG/node:20-bookworm-slim" "$WORK/node" >/dev/null
  rm -rf "$WORK/node"
fi

# --- the Dockerfiles, adapted as described above ------------------------------

mkdir -p "$WORK/ctx/runner-template"
cp "$ROOT/runner-template/package.json" "$ROOT/runner-template/package-lock.json" "$WORK/ctx/runner-template/"
cp "$BMM_BIN" "$WORK/ctx/bmm"
python3 - "$ROOT/deploy" "$WORK" <<'PY'
import re, sys
src, work = sys.argv[1], sys.argv[2]
for name in ("api", "worker", "runtime"):
    s = open(f"{src}/Dockerfile.{name}").read()
    s = re.sub(r"--mount=type=cache,\S+ ?", "", s)
    if name in ("api", "worker"):
        start = s.index("FROM rust:")
        end = s.index("\n\n", s.index("install -D -m 0755 target/release/bmm"))
        s = s[:start] + "FROM ${DEBIAN_IMAGE} AS builder\nCOPY bmm /out/bmm\n" + s[end:]
    open(f"{work}/Dockerfile.{name}", "w").write(s)
PY

args=(--build-arg "DEBIAN_IMAGE=$TAG/debian:bookworm-slim" --build-arg "NODE_IMAGE=$TAG/node:20-bookworm-slim")
printf '\n[check-images] docker build\n'
for name in runtime api worker; do
  if DOCKER_BUILDKIT=0 docker build -f "$WORK/Dockerfile.$name" "${args[@]}" -t "$TAG/$name" "$WORK/ctx" >"$WORK/build-$name.log" 2>&1; then
    ok "deploy/Dockerfile.$name builds"
  else
    tail -15 "$WORK/build-$name.log"
    fail "deploy/Dockerfile.$name does not build"
  fi
done

# --- what the images promise ------------------------------------------------

printf '\n[check-images] contracts\n'
run() { docker run --rm --label bmm-check "$@"; }
# expect WHAT WANT COMMAND...
expect() {
  local what="$1" want="$2"; shift 2
  local got
  got="$("$@" 2>&1 | tr -d '\r' | tail -1)" || true
  if [ "$got" = "$want" ]; then ok "$what"; else fail "$what: want \"$want\", got \"$got\""; fi
}

# The runtime image, run the way activities/src/docker.rs runs a server.
expect "runtime: node 20, uid 10001, /app, NODE_ENV=production, read-only root" "v20 10001 /app mcp production" \
  run --read-only --cap-drop ALL --security-opt no-new-privileges:true "$TAG/runtime" \
  -e 'console.log(process.version.split(".")[0], process.getuid(), process.cwd(), require("os").userInfo().username, process.env.NODE_ENV)'
expect "runtime: npm, npx and corepack removed" "false false false" \
  run "$TAG/runtime" -e 'const fs=require("fs");console.log(["npm","npx","corepack"].map(b=>fs.existsSync("/usr/local/bin/"+b)).join(" "))'
mkdir -p "$WORK/srv"
cat >"$WORK/srv/server.mjs" <<'JS'
import http from "node:http";
http.createServer((q, s) => s.end(q.url === "/healthz" ? `ok ${process.getuid()}` : "no")).listen(Number(process.env.PORT), "0.0.0.0");
JS
printf 'FROM %s/runtime\nCOPY server.mjs /app/server.mjs\nUSER 10001:10001\nWORKDIR /app\n' "$TAG" >"$WORK/srv/Dockerfile"
if DOCKER_BUILDKIT=0 docker build -q -t "$TAG/server" "$WORK/srv" >/dev/null 2>&1; then
  cid="$(docker run -d --label bmm-check --read-only --tmpfs /tmp:rw,noexec,nosuid,nodev,size=16m --cap-drop ALL \
    --security-opt no-new-privileges:true --user 10001:10001 -e PORT=8080 -p 127.0.0.1::8080 "$TAG/server" /app/server.mjs)"
  port="$(docker port "$cid" 8080/tcp | head -1 | sed 's/.*://')"
  got=""
  for _ in $(seq 1 50); do
    got="$(curl -fsS "http://127.0.0.1:$port/healthz" 2>/dev/null || true)"
    [ -n "$got" ] && break
    sleep 0.1
  done
  if [ "$got" = "ok 10001" ]; then ok "runtime: a server image built FROM it answers /healthz on 127.0.0.1"; else fail "runtime: server from it: got \"$got\""; fi
  docker rm -f "$cid" >/dev/null
else
  fail "runtime: the worker's per-bundle Dockerfile does not build on it"
fi

expect "worker: runs as uid 10000" "uid=10000(bmm) gid=10000(bmm) groups=10000(bmm)" run --entrypoint id "$TAG/worker"
expect "worker: node 20 on PATH" "v20" run --entrypoint node "$TAG/worker" -e 'console.log(process.version.split(".")[0])'
expect "worker: tsc from the lock file" "Version $(node -p 'require(process.argv[1]).packages["node_modules/typescript"].version' "$ROOT/runner-template/package-lock.json")" \
  run --read-only --entrypoint /opt/bmm/toolchain/node_modules/.bin/tsc "$TAG/worker" --version
expect "worker: esbuild from the lock file" "$(node -p 'require(process.argv[1]).packages["node_modules/esbuild"].version' "$ROOT/runner-template/package-lock.json")" \
  run --read-only --entrypoint /opt/bmm/toolchain/node_modules/.bin/esbuild "$TAG/worker" --version
# shellcheck disable=SC2016 # expanded by the container's shell
expect "worker: BMM_TOOLCHAIN_DIR and the lock digest" "/opt/bmm/toolchain $(sha256sum "$ROOT/runner-template/package-lock.json" | cut -c1-64)" \
  run --entrypoint /bin/sh "$TAG/worker" -c 'echo "$BMM_TOOLCHAIN_DIR $(cat "$BMM_TOOLCHAIN_DIR/.lock-digest")"'
expect "worker: reaches the Docker socket as uid 10000 through group_add" "ok" \
  run --read-only --group-add "$(stat -c %g /var/run/docker.sock)" -v /var/run/docker.sock:/var/run/docker.sock \
  --entrypoint node "$TAG/worker" -e '
    const r=require("http").get({socketPath:"/var/run/docker.sock",path:"/_ping"},s=>{let b="";s.on("data",d=>b+=d);s.on("end",()=>console.log(b==="OK"?"ok":b))});
    r.on("error",e=>console.log(e.code))'

expect "api: runs as uid 10000" "uid=10000(bmm) gid=10000(bmm) groups=10000(bmm)" run --entrypoint id "$TAG/api"
expect "api: bmm is the entrypoint" "Usage: bmm <COMMAND>" sh -c "docker run --rm --label bmm-check $TAG/api --help | grep '^Usage'"
expect "api: curl for the health check" "ok" run --entrypoint /bin/sh "$TAG/api" -c 'command -v curl >/dev/null && echo ok'
mkdir -p "$WORK/data"
run --user 0:0 --network none --entrypoint /usr/bin/install -v "$WORK/data:$WORK/data" "$TAG/api" \
  -d -o 10000 -g 10000 -m 0755 "$WORK/data/bmm" "$WORK/data/bmm/jwks" || true
if [ "$(stat -c '%u:%g %a' "$WORK/data/bmm/jwks" 2>/dev/null)" = "10000:10000 755" ]; then
  ok "data-dir: the one-shot makes BMM_DATA_DIR owned by 10000"
else
  fail "data-dir: $(stat -c '%u:%g %a' "$WORK/data/bmm/jwks")"
fi

echo
if [ "$failures" -gt 0 ]; then
  echo "[check-images] $failures problem(s)"
  exit 1
fi
echo "[check-images] all checks passed (images: $TAG/runtime, $TAG/api, $TAG/worker)"
