#!/usr/bin/env bash
# demo.sh: a whole Fieldpass on this machine, to look around in: a throwaway
# Postgres, a broker, and one enrolled connector exposing a tiny web server
# as service "web". Everything listens on 127.0.0.1 only. Ctrl-C stops it all
# and removes every file it made.
#
#   deploy/demo/demo.sh        (or: make demo)
#
# Needs python3, the PostgreSQL server binaries (initdb, pg_ctl and postgres,
# on PATH or in /usr/lib/postgresql/*/bin) and go, unless FIELDPASS_BIN names
# a directory with the binaries already built. Run as root, Postgres runs as
# the "postgres" user (or "nobody"): initdb refuses root.
#
# Environment:
#   FIELDPASS_BIN=DIR        use fieldpass-broker and fieldpass-connector from DIR
#   FIELDPASS_DEMO_KEEP=1    keep the demo directory (logs, state) after Ctrl-C
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
device="demo-device"
demo=""
pids=()
pgdata=""
pgctl=""
pguser=""

say() { printf '%s\n' "$*"; }
die() {
	printf 'demo: %s\n' "$*" >&2
	exit 1
}

# as_pg runs a command as the user Postgres runs as.
as_pg() {
	if [ -z "$pguser" ]; then
		"$@"
	elif command -v runuser >/dev/null; then
		runuser -u "$pguser" -- "$@"
	else
		su -s /bin/sh "$pguser" -c "$(printf '%q ' "$@")"
	fi
}

cleanup() {
	local code=$?
	# A second Ctrl-C (or a TERM from a supervisor) must not cut the
	# teardown short and leave Postgres running.
	trap '' INT TERM
	trap - EXIT
	say ""
	say "Stopping the demo..."
	local pid
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [ -n "$pgctl" ] && [ -f "$pgdata/postmaster.pid" ]; then
		as_pg "$pgctl" stop -D "$pgdata" -m fast -w -t 30 >/dev/null 2>&1 ||
			as_pg "$pgctl" stop -D "$pgdata" -m immediate -w >/dev/null 2>&1 || true
	fi
	if [ -n "$demo" ]; then
		if [ "${FIELDPASS_DEMO_KEEP:-}" = 1 ]; then
			say "Kept $demo"
		else
			rm -rf "$demo"
		fi
	fi
	say "Demo stopped."
	exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# pg_bin finds a PostgreSQL server binary the way postgres/pgtest does.
pg_bin() {
	if command -v "$1" >/dev/null; then
		command -v "$1"
		return
	fi
	local d
	for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k5 -n -r); do
		if [ -x "$d/$1" ]; then
			say "$d/$1"
			return
		fi
	done
	die "PostgreSQL server binary $1 not found: install the server (Debian: apt-get install postgresql) or put its bin directory on PATH"
}

# free_port prints a port of 127.0.0.1 that was free a moment ago.
free_port() {
	python3 -c 'import socket,sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' "$1"
}

# start NAME LOG CMD...: runs CMD in the background, its output in LOG.
start() {
	local name=$1 log=$2
	shift 2
	"$@" >"$log" 2>&1 &
	pids+=($!)
	eval "pid_$name=$!"
}

alive_or_die() {
	local name=$1 log=$2 pid
	eval "pid=\$pid_$name"
	if ! kill -0 "$pid" 2>/dev/null; then
		say "demo: $name stopped unexpectedly; the end of $log:" >&2
		tail -n 20 "$log" >&2 || true
		exit 1
	fi
}

command -v python3 >/dev/null || die "python3 is needed (free ports, the demo web server)"
initdb=$(pg_bin initdb)
pgctl=$(pg_bin pg_ctl)
pg_bin postgres >/dev/null

demo=$(mktemp -d "${TMPDIR:-/tmp}/fieldpass-demo.XXXXXX")
chmod 0711 "$demo" # the postgres user must reach its directory inside
mkdir -p "$demo/logs" "$demo/www" "$demo/broker" "$demo/connector"
logs=$demo/logs

# --- binaries -----------------------------------------------------------------
if [ -n "${FIELDPASS_BIN:-}" ]; then
	bin=$(cd "$FIELDPASS_BIN" && pwd)
else
	command -v go >/dev/null || die "go is needed to build the binaries (or set FIELDPASS_BIN=DIR)"
	say "Building the binaries..."
	bin=$demo/bin
	(cd "$root" && go build -o "$bin/" ./cmd/...)
fi
for b in fieldpass-broker fieldpass-connector; do
	[ -x "$bin/$b" ] || die "$bin/$b not found"
done
export PATH="$bin:$PATH"

# --- Postgres -------------------------------------------------------------------
if [ "$(id -u)" = 0 ]; then
	for u in postgres nobody; do
		if id "$u" >/dev/null 2>&1; then
			pguser=$u
			break
		fi
	done
	[ -n "$pguser" ] || die 'running as root, and initdb refuses root: create a "postgres" user'
fi
pgdir=$demo/postgres
pgdata=$pgdir/data
mkdir -p "$pgdir/sock"
touch "$logs/postgres.log"
if [ -n "$pguser" ]; then chown -R "$pguser" "$pgdir" "$logs/postgres.log"; fi
say "Starting a throwaway Postgres${pguser:+ as user $pguser}..."
as_pg "$initdb" -D "$pgdata" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$logs/initdb.log" 2>&1 ||
	{
		cat "$logs/initdb.log" >&2
		die "initdb failed"
	}
pgport=$(free_port tcp)
cat >>"$pgdata/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pgport
unix_socket_directories = '$pgdir/sock'
fsync = off
full_page_writes = off
synchronous_commit = off
EOF
as_pg "$pgctl" start -D "$pgdata" -l "$logs/postgres.log" -w -t 60 >/dev/null ||
	{
		tail -n 20 "$logs/postgres.log" >&2
		die "Postgres did not start"
	}
export FIELDPASS_DATABASE_URL="postgres://postgres@127.0.0.1:$pgport/postgres?sslmode=disable"
fieldpass-broker migrate >/dev/null

# --- broker -------------------------------------------------------------------
httpport=$(free_port tcp)
wgport=$(free_port udp)
broker_url=http://127.0.0.1:$httpport
say "Starting the broker on $broker_url..."
start broker "$logs/broker.log" fieldpass-broker serve \
	--http-listen "127.0.0.1:$httpport" \
	--wg-listen "127.0.0.1:$wgport" \
	--public-url "$broker_url" \
	--key-file "$demo/broker/broker.key" \
	--broker-id demo
for i in $(seq 100); do
	alive_or_die broker "$logs/broker.log"
	if python3 -c 'import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=1).read().strip() == b"ok" else 1)' \
		"$broker_url/healthz" 2>/dev/null; then
		break
	fi
	[ "$i" -lt 100 ] || die "the broker did not answer $broker_url/healthz; see $logs/broker.log"
	sleep 0.1
done

# --- a local service and the connector ------------------------------------------
webport=$(free_port tcp)
cat >"$demo/www/index.html" <<EOF
<!doctype html><title>Fieldpass demo device</title>
<h1>Hello from $device</h1>
<p>This page is served on 127.0.0.1:$webport and exposed through Fieldpass as service "web".</p>
EOF
start web "$logs/web.log" python3 -m http.server --bind 127.0.0.1 --directory "$demo/www" "$webport"

say "Enrolling $device..."
token=$(fieldpass-broker token create --device "$device" --label site=demo --ttl 10m)
fieldpass-connector enroll --broker "$broker_url" --token "$token" --state-dir "$demo/connector/state" >/dev/null
unset token

# The connector's own config file format: one flag per line.
cat >"$demo/connector/connector.conf" <<EOF
# Written by demo.sh; the format of deploy/examples/connector.conf.
service = web=127.0.0.1:$webport
listen = 127.0.0.1:0
max-backoff = 5s
EOF
start connector "$logs/connector.log" fieldpass-connector run \
	--config "$demo/connector/connector.conf" --state-dir "$demo/connector/state"

for i in $(seq 60); do
	alive_or_die connector "$logs/connector.log"
	alive_or_die broker "$logs/broker.log"
	devices=$(fieldpass-broker device list --json)
	if grep -q '"online": true' <<<"$devices"; then
		break
	fi
	[ "$i" -lt 60 ] || die "$device did not come online within 30 s; see $logs/connector.log and $logs/broker.log"
	sleep 0.5
done

cat <<EOF

$device is online. The Fieldpass demo is running, on 127.0.0.1 only, in $demo:

  postgres   127.0.0.1:$pgport (database "postgres")       log: $logs/postgres.log
  broker     $broker_url, WireGuard udp/$wgport   log: $logs/broker.log
  connector  device "$device", state $demo/connector/state
             config $demo/connector/connector.conf   log: $logs/connector.log
  web        http://127.0.0.1:$webport, exposed to the broker as service "web"
                                                        log: $logs/web.log

$(fieldpass-broker device list)

Try, in another terminal:

  export PATH='$bin':"\$PATH"
  export FIELDPASS_DATABASE_URL='$FIELDPASS_DATABASE_URL'
  fieldpass-broker device list
  fieldpass-broker device disable $device   # offline within a second or two; the connector keeps trying
  fieldpass-broker device enable $device    # back online within half a minute
  fieldpass-broker token create --device another-device
  tail -f $logs/broker.log $logs/connector.log

Press Ctrl-C to stop everything and remove $demo.
EOF

while :; do
	alive_or_die broker "$logs/broker.log"
	alive_or_die connector "$logs/connector.log"
	alive_or_die web "$logs/web.log"
	sleep 1 &
	wait $! || true
done
