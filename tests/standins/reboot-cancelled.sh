#!/bin/sh
# Stand-in for a reboot that never happens (a shutdown cancelled after it stopped the
# services, a reboot command that reports success without rebooting): like `systemctl
# reboot` it returns at once and the service manager stops the daemon with SIGTERM, but the
# machine stays up: the boot id is the same. (A blocking inhibitor lock is not this case:
# root bypasses it on the systemd versions Amazon Linux and Ubuntu ship, and newer systemd
# makes `systemctl reboot` fail instead.)
# Each request is logged in REQUESTS_FILE.
# usage: reboot-cancelled.sh REQUESTS_FILE
set -eu
echo "reboot requested" >> "$1"
daemon=$PPID
( sleep 0.2; kill -TERM "$daemon" 2>/dev/null || true ) >/dev/null 2>&1 &
