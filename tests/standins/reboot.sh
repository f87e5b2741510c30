#!/bin/sh
# Stand-in for `systemctl reboot`: a new boot id, the ECS agent down (optionally with its
# saved state lost), /var/run of the throwaway root emptied, and the calling process
# killed, as a real reboot would. Each call is logged in BOOT_ID_FILE.reboots.
# usage: reboot.sh CONTROL_URL BOOT_ID_FILE ROOT HOST_INDEX [lose-agent-state]
set -eu
url=$1 boot_id_file=$2 root=$3 host=$4
lose=false
[ "${5:-}" = lose-agent-state ] && lose=true
cat /proc/sys/kernel/random/uuid > "$boot_id_file"
echo "reboot" >> "$boot_id_file.reboots"
rm -f "$root/var/run/reboot-required" "$root/var/run/reboot-required.pkgs"
python3 "$(dirname "$0")/standin_ctl.py" "$url" reboot "{\"lose_agent_state\": $lose, \"host\": $host}" >/dev/null
kill -9 "$PPID"
