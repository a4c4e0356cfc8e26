#!/bin/sh
# Runs once, when the postgres container initialises an empty data volume
# (/docker-entrypoint-initdb.d). Creates one role and database for the
# platform and one role with two databases for Temporal, so neither can read
# the other's tables. Passwords come from the compose environment.
set -eu

: "${BMM_POSTGRES_PASSWORD:?BMM_POSTGRES_PASSWORD is required}"
: "${TEMPORAL_POSTGRES_PASSWORD:?TEMPORAL_POSTGRES_PASSWORD is required}"

# psql variables (:'name') quote the passwords as SQL literals.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v bmm_password="$BMM_POSTGRES_PASSWORD" \
  -v temporal_password="$TEMPORAL_POSTGRES_PASSWORD" <<'SQL'
CREATE ROLE bmm LOGIN PASSWORD :'bmm_password';
CREATE DATABASE bmm OWNER bmm;
REVOKE ALL ON DATABASE bmm FROM PUBLIC;

CREATE ROLE temporal LOGIN PASSWORD :'temporal_password';
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;
REVOKE ALL ON DATABASE temporal FROM PUBLIC;
REVOKE ALL ON DATABASE temporal_visibility FROM PUBLIC;
SQL
