#!/bin/sh
# After installing or upgrading fieldpass-broker or fieldpass-connector from
# a .deb (postinst configure) or an .rpm (%post). The package carries the
# binary, the systemd unit and /etc/fieldpass; the unit runs as a dynamic
# user that systemd makes on start, so no account is added here.
#
# A first install starts nothing: the broker needs its database URLs in
# /etc/fieldpass/broker.env, the connector an enrolment. An upgrade restarts
# a running service on the new binary. Under `dpkg --root` (DPKG_ROOT set)
# the running system is not touched.
set -e
name=@NAME@
root="${DPKG_ROOT:-}"

install -d -m 0755 "$root/etc/fieldpass"
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	systemctl try-restart "$name.service" || true
	if ! systemctl is-enabled --quiet "$name.service" 2>/dev/null; then
		echo "$name: installed. See /usr/lib/systemd/system/$name.service for the next steps, then: systemctl enable --now $name" >&2
	fi
fi
exit 0
