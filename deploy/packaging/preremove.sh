#!/bin/sh
# Before removing fieldpass-broker or fieldpass-connector (deb prerm remove;
# rpm %preun with 0 packages left): stop and disable the service. An upgrade
# keeps it running; postinstall restarts it. State under /var/lib (the
# broker's WireGuard key, the device's enrolment) is never deleted here:
# losing it means enrolling devices again.
set -e
name=@NAME@
case "$1" in
	upgrade|1) exit 0 ;;
esac
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl disable --now "$name.service" || true
fi
exit 0
