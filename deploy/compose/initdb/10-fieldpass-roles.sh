#!/bin/sh
# Run once by the postgres image on an empty data directory: the two roles
# of deploy/README.md ("Database roles"), their passwords read from the
# pgpass files given as secrets (host:port:database:user:password), and the
# database the owner owns.
set -eu
password() { cut -d: -f5- "/run/secrets/$1"; }
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
	-v owner_password="$(password owner_pgpass)" -v broker_password="$(password broker_pgpass)" <<'SQL'
CREATE ROLE fieldpass_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE fieldpass_broker LOGIN PASSWORD :'broker_password';
CREATE DATABASE fieldpass OWNER fieldpass_owner;
\c fieldpass
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
