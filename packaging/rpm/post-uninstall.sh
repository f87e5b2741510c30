# ecs-patchd %postun ($1: 0 on removal, 1 or more on upgrade), as
# %systemd_postun_with_restart does, except when the upgrade is the daemon's own install step
# (this scriptlet then runs in its cgroup): a restart would wait for the daemon, which waits
# for this transaction. The daemon runs the new binary itself once its cycle is done.
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || :
  if [ "$1" -ge 1 ] && ! grep -q 'ecs-patchd\.service' /proc/self/cgroup 2>/dev/null; then
    systemctl try-restart ecs-patchd.service >/dev/null 2>&1 || :
  fi
fi
