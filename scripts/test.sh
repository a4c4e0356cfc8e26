#!/usr/bin/env bash
# Every test, against the real stack: installs what is missing, starts
# PostgreSQL, Temporal and Docker (scripts/stack.sh), then runs the format and
# lint checks, the Rust tests (unit and end-to-end), and the end-to-end clients
# (official Python MCP client, graphql-ws, headless Chromium).
# The swarm backend's tests start a private dockerd of their own in swarm mode
# (runtime/src/swarm/testing.rs; root, dockerd and ip needed) and never make
# the shared engine a swarm; .config/nextest.toml runs them one at a time.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# The cargo target folder lives outside the clone so repeated runs reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bmm-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "installing what is missing"
scripts/stack.sh deps
step "starting PostgreSQL, Temporal, Docker"
scripts/stack.sh services
eval "$(scripts/stack.sh env)"
export BMM_TEST_DATABASE_URL="${BMM_TEST_DATABASE_URL:-postgres://bmm@127.0.0.1:${BMM_PG_PORT:-55432}/postgres}"

if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
step "production stack: temporal-compose.yml, Dockerfiles, shell scripts"
scripts/check-compose.sh
step "building"
cargo build --workspace --bins
"$CARGO_TARGET_DIR/debug/bmm" migrate
"$CARGO_TARGET_DIR/debug/bmm" doctor

step "Rust tests (unit and end-to-end)"
cargo nextest run --workspace --no-fail-fast

if [ -x scripts/e2e.sh ]; then
  step "end-to-end clients against a running platform"
  scripts/e2e.sh
fi
