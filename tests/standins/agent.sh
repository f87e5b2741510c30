#!/bin/sh
# Stand-in for `systemctl start ecs` / `systemctl restart ecs`: returns at once, as systemctl
# does; the agent that comes up a moment later is the agent package's version (ecs-init, or amazon-ecs-init
# with apt) installed in the throwaway root.
# usage: agent.sh start|restart CONTROL_URL dnf|apt ROOT HOST_INDEX
set -eu
url=$2 manager=$3 root=$4 host=$5
case $manager in
  dnf) version=$(rpm --root="$root" -q --qf '%{VERSION}' ecs-init) ;;
  apt) version=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Version}' amazon-ecs-init) ;;
  *) echo "unknown package manager $manager" >&2; exit 2 ;;
esac
restart=false
[ "$1" = restart ] && restart=true
python3 "$(dirname "$0")/standin_ctl.py" "$url" agent/start "{\"version\": \"$version\", \"host\": $host, \"restart\": $restart}" >/dev/null
