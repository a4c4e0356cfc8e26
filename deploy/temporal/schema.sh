#!/bin/sh
# One-shot (admin-tools image): create or upgrade Temporal's schemas in the
# databases deploy/postgres/init-databases.sh made. Safe to re-run: on a
# database already stamped with a version, `setup-schema -v 0.0` leaves the
# version alone and `update-schema` applies only the newer migrations. Run
# again after upgrading the Temporal images.
set -eu

: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
PORT="${DB_PORT:-5432}"
SCHEMA=/etc/temporal/schema/postgresql/v12

echo "waiting for PostgreSQL at $POSTGRES_SEEDS:$PORT"
i=0
until nc -z -w 2 "$POSTGRES_SEEDS" "$PORT"; do
  i=$((i + 1))
  [ "$i" -lt 60 ] || { echo "PostgreSQL did not answer" >&2; exit 1; }
  sleep 1
done

sql_tool() {
  temporal-sql-tool --plugin postgres12 --endpoint "$POSTGRES_SEEDS" --port "$PORT" \
    --user "$POSTGRES_USER" --password "$SQL_PASSWORD" "$@"
}

for db in temporal:temporal visibility:temporal_visibility; do
  dir="${db%%:*}"
  name="${db#*:}"
  echo "schema of $name"
  sql_tool --database "$name" setup-schema -v 0.0
  sql_tool --database "$name" update-schema -d "$SCHEMA/$dir/versioned"
done
echo "Temporal schemas are up to date"
