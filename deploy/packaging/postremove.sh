#!/bin/sh
# After removing fieldpass-broker or fieldpass-connector: forget the unit.
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
