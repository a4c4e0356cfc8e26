#!/usr/bin/env bash
# Brings the whole platform up on this machine: installs what is missing,
# starts PostgreSQL, Temporal and Docker, builds `bmm`, applies migrations and
# runs `bmm dev` (API, gateway, build worker, dashboard) in the background.
# Idempotent: run it again to rebuild and restart the platform.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bmm-target}"

scripts/stack.sh deps
scripts/stack.sh services
eval "$(scripts/stack.sh env)"
cargo build -p bmm
BMM="$CARGO_TARGET_DIR/debug/bmm"
"$BMM" migrate >/dev/null

LISTEN="${BMM_LISTEN:-127.0.0.1:8080}"
PIDFILE="$BMM_HOME/run/bmm-dev.pid"
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "[up] restarting bmm dev"
  kill "$(cat "$PIDFILE")" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.2; done
fi
setsid "$BMM" dev >"$BMM_HOME/logs/bmm-dev.log" 2>&1 </dev/null &
echo $! >"$PIDFILE"
for _ in $(seq 1 120); do
  curl -fsS "http://$LISTEN/readyz" >/dev/null 2>&1 && break
  kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { tail -30 "$BMM_HOME/logs/bmm-dev.log"; echo "[up] bmm dev exited" >&2; exit 1; }
  sleep 0.5
done
curl -fsS "http://$LISTEN/readyz" >/dev/null || { tail -30 "$BMM_HOME/logs/bmm-dev.log"; echo "[up] bmm dev is not ready" >&2; exit 1; }
"$BMM" doctor || true
SIGN_IN="$("$BMM" auth magic-link --email "${BMM_ADMIN_EMAIL:-admin@localhost.test}" 2>/dev/null || true)"
cat <<MSG

BuildMyMCP is up.
  Dashboard     http://$LISTEN/
  Sign in       ${SIGN_IN:-"bmm auth magic-link --email you@example.com"}
  GraphQL       http://$LISTEN/graphql   (GraphiQL: http://$LISTEN/graphiql)
  Temporal UI   $BMM_TEMPORAL_UI_URL
  Logs          $BMM_HOME/logs/bmm-dev.log
Stop: kill \$(cat $PIDFILE); scripts/stack.sh down
MSG
