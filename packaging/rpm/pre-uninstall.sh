# ecs-patchd %preun ($1: 0 on removal, 1 or more on upgrade). On removal, stop the daemon and
# refuse while a patch cycle is in progress (before-removal says why), then disable the unit
# as %systemd_preun does.
if [ "$1" -eq 0 ]; then
  /usr/libexec/ecs-patchd/before-removal || exit 1
  if command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable ecs-patchd.service >/dev/null 2>&1 || :
  fi
fi
