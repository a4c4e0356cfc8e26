#!/usr/bin/env bash
# End-to-end clients against a real running platform: starts `bmm dev` on its
# own database, port and task queue, then runs the official Python MCP client
# (OAuth included), the npm graphql-ws client and the browser tests.
# Expects the stack to be up (scripts/stack.sh services) and `bmm` built.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
eval "$(scripts/stack.sh env)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bmm-target}"
BMM="$CARGO_TARGET_DIR/debug/bmm"
PORT="${BMM_E2E_PORT:-18080}"
RUN="e2e$(date +%s)"
DB="bmm_$RUN"
ART="$ROOT/e2e/artifacts/$RUN"
mkdir -p "$ART"

psql_admin() { psql -h 127.0.0.1 -p "${BMM_PG_PORT:-55432}" -U bmm -d postgres -qtAc "$1"; }
psql_admin "CREATE DATABASE $DB"

export BMM_DATABASE_URL="postgres://bmm@127.0.0.1:${BMM_PG_PORT:-55432}/$DB"
export BMM_LISTEN="127.0.0.1:$PORT"
export BMM_PUBLIC_URL="http://127.0.0.1:$PORT"
export BMM_TEMPORAL_TASK_QUEUE="bmm-$RUN"
export BMM_DATA_DIR="$BMM_HOME/$RUN"
export BMM_GENERATOR=offline

"$BMM" migrate >/dev/null
"$BMM" dev >"$ART/bmm-dev.log" 2>&1 &
PID=$!
cleanup() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  # Remove what this run deployed, then its database.
  for org in $(psql -h 127.0.0.1 -p "${BMM_PG_PORT:-55432}" -U bmm -d "$DB" -qtAc "SELECT id FROM orgs" 2>/dev/null); do
    docker ps -aq --filter "label=bmm.org=$org" | xargs -r docker rm -f >/dev/null 2>&1 || true
  done
  psql_admin "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
}
trap cleanup EXIT

for _ in $(seq 1 240); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$PID" 2>/dev/null || { tail -50 "$ART/bmm-dev.log"; echo "bmm dev exited" >&2; exit 1; }
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null || { tail -50 "$ART/bmm-dev.log"; echo "bmm dev never became ready" >&2; exit 1; }

export BMM_URL="http://127.0.0.1:$PORT"
BMM_API_KEY="$("$BMM" org create-api-key --email e2e@example.test --name e2e)"
BMM_MAGIC_LINK="$("$BMM" auth magic-link --email e2e@example.test)"
BMM_MAGIC_LINK_2="$("$BMM" auth magic-link --email e2e@example.test)"
export BMM_API_KEY BMM_MAGIC_LINK BMM_MAGIC_LINK_2

status=0
echo "--- official Python MCP client"
(cd e2e/python && python3 -m pytest -q -p no:cacheprovider) || status=1

echo "--- graphql-ws client"
# A real build to follow: previewed and created through the API.
BMM_BUILD_ID="$(python3 - "$BMM_URL" "$BMM_API_KEY" "$RUN" <<'PY'
import json, sys, urllib.request
url, key, run = sys.argv[1:]
def gql(query, **variables):
    req = urllib.request.Request(f"{url}/graphql", json.dumps({"query": query, "variables": variables}).encode(),
                                 {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    body = json.load(urllib.request.urlopen(req))
    assert not body.get("errors"), body["errors"]
    return body["data"]
preview = gql("mutation($d: String!) { previewServer(input: {description: $d}) { id } }", d="An echo tool.")
created = gql("mutation($p: ID!, $n: String!) { createServer(input: {previewId: $p, name: $n, credentials: []}) { build { id } } }",
              p=preview["previewServer"]["id"], n=f"graphql-ws {run}")
print(created["createServer"]["build"]["id"])
PY
)"
export BMM_API_URL="$BMM_URL" BMM_BUILD_ID
(cd e2e/node && node --test) || status=1

echo "--- headless Chromium"
BMM_MAGIC_LINK="$("$BMM" auth magic-link --email browser@example.test)"
export BMM_MAGIC_LINK
(cd e2e/browser && node --test) || status=1

if [ "$status" != 0 ]; then
  echo "--- bmm dev log (last 80 lines)"; tail -80 "$ART/bmm-dev.log"
fi
exit "$status"
