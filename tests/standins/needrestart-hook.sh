#!/bin/sh
# Stands in for Ubuntu's needrestart apt hook (`/usr/lib/needrestart/apt-pinvoke`, run by
# `DPkg::Post-Invoke` from /etc/apt/apt.conf.d/99needrestart). Since Ubuntu 24.04 it
# restarts the services that use a replaced library even when apt runs non-interactively;
# this one "restarts" the ecs-patchd that started the apt run (SIGTERM, as `systemctl
# restart` sends), unless needrestart's documented variables keep it from restarting:
# NEEDRESTART_SUSPEND non-empty (the hook does not run needrestart) or NEEDRESTART_MODE
# l(ist) or i(nteractive, which falls back to list without a terminal).
# Every call appends the variables it saw to LOG.
# usage: needrestart-hook.sh LOG
set -u
log=$1
echo "NEEDRESTART_SUSPEND=${NEEDRESTART_SUSPEND:-} NEEDRESTART_MODE=${NEEDRESTART_MODE:-}" >> "$log"
[ -n "${NEEDRESTART_SUSPEND:-}" ] && exit 0
case ${NEEDRESTART_MODE:-a} in l|i) exit 0 ;; esac
# Up the process tree (hook, sh -c, apt-get, ...) to the ecs-patchd that runs apt.
pid=$$
for _ in 1 2 3 4 5 6 7 8; do
  pid=$(cut -d' ' -f4 "/proc/$pid/stat" 2>/dev/null) || exit 0
  [ "$pid" -gt 1 ] 2>/dev/null || exit 0
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = ecs-patchd ]; then
    echo "restarting ecs-patchd (pid $pid)" >> "$log"
    kill -TERM "$pid"
    exit 0
  fi
done
