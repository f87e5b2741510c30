#!/bin/sh
# Stand-in for `systemctl reboot`: a new boot id, the ECS agent down (optionally with its
# saved state lost), /var/run of the throwaway root emptied. Like systemctl, it returns at
# once; the service manager then stops the daemon with SIGTERM (KillMode=mixed: the daemon
# alone), and with SIGKILL if it is still there 10 s later. The newest kernel in the
# root's /boot becomes the running one (pkg/osrelease). Each call is logged in
# BOOT_ID_FILE.reboots.
# usage: reboot.sh CONTROL_URL BOOT_ID_FILE ROOT HOST_INDEX [lose-agent-state]
set -eu
url=$1 boot_id_file=$2 root=$3 host=$4
lose=false
[ "${5:-}" = lose-agent-state ] && lose=true
cat /proc/sys/kernel/random/uuid > "$boot_id_file"
echo "reboot" >> "$boot_id_file.reboots"
rm -f "$root/var/run/reboot-required" "$root/var/run/reboot-required.pkgs"
# The boot loader starts the newest kernel installed: it is the running one now.
newest=$(ls -t --time=ctime "$root"/boot/vmlinuz-* 2>/dev/null | head -n 1)
[ -z "$newest" ] || echo "${newest##*/vmlinuz-}" > "$(dirname "$root")/osrelease"
python3 "$(dirname "$0")/standin_ctl.py" "$url" reboot "{\"lose_agent_state\": $lose, \"host\": $host}" >/dev/null
daemon=$PPID
(
  sleep 0.2
  kill -TERM "$daemon" 2>/dev/null || exit 0
  waited=0
  while [ -d "/proc/$daemon" ] && ! grep -q '^State:.*Z' "/proc/$daemon/status" 2>/dev/null && [ $waited -lt 100 ]; do
    sleep 0.1; waited=$((waited + 1))
  done
  [ $waited -lt 100 ] || kill -KILL "$daemon" 2>/dev/null || true
) >/dev/null 2>&1 &
