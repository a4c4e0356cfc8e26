#!/bin/sh
# One-shot (admin-tools image): once the Temporal server answers, make sure
# the platform's namespace exists and carries the search attributes every
# build workflow is started with (see workflows/: BmmOrg, BmmServer,
# BmmBuild as Keyword, BmmVersion as Int). Idempotent: only what is missing
# is created.
set -eu

ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${BMM_TEMPORAL_NAMESPACE:-default}"
RETENTION="${BMM_TEMPORAL_RETENTION:-30d}"

echo "waiting for Temporal at $ADDRESS"
i=0
until temporal operator cluster health --address "$ADDRESS" >/dev/null 2>&1; do
  i=$((i + 1))
  [ "$i" -lt 90 ] || { echo "Temporal did not become healthy" >&2; exit 1; }
  sleep 2
done

if temporal operator namespace describe --address "$ADDRESS" --namespace "$NAMESPACE" >/dev/null 2>&1; then
  echo "namespace $NAMESPACE exists"
else
  echo "creating namespace $NAMESPACE (retention $RETENTION)"
  temporal operator namespace create --address "$ADDRESS" --namespace "$NAMESPACE" --retention "$RETENTION"
fi

existing="$(temporal operator search-attribute list --address "$ADDRESS" --namespace "$NAMESPACE" 2>/dev/null || true)"
for attr in BmmOrg:Keyword BmmServer:Keyword BmmBuild:Keyword BmmVersion:Int; do
  name="${attr%%:*}"
  type="${attr#*:}"
  if printf '%s\n' "$existing" | grep -qw "$name"; then
    echo "search attribute $name exists"
  else
    echo "creating search attribute $name ($type)"
    temporal operator search-attribute create --address "$ADDRESS" --namespace "$NAMESPACE" \
      --name "$name" --type "$type"
  fi
done

# A namespace just created takes a moment to reach every frontend; wait
# until the attributes are visible so the API's first build does not fail.
i=0
until temporal operator search-attribute list --address "$ADDRESS" --namespace "$NAMESPACE" 2>/dev/null \
    | grep -qw BmmVersion; do
  i=$((i + 1))
  [ "$i" -lt 30 ] || { echo "search attributes did not appear" >&2; exit 1; }
  sleep 2
done
echo "Temporal namespace $NAMESPACE is ready"
