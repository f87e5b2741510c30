# ecs-patchd %post ($1: 1 on first install, 2 or more on upgrade): config.d/ and the state
# directory (created here: cargo-generate-rpm cannot package an empty directory, and the
# journal must outlive the package anyway). On first install the unit is enabled, not
# started, as its preset says (80-ecs-patchd.preset), the way %systemd_post does; a preset
# of the administrator's in /etc/systemd/system-preset/ wins.
mkdir -p /etc/ecs-patchd/config.d /var/lib/ecs-patchd
chmod 0700 /var/lib/ecs-patchd
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
  systemctl --no-reload preset ecs-patchd.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || :
fi
