#!/bin/sh
# Run by the package's prerm (DEB) or %preun (RPM) on removal, not upgrade. Refuses the
# removal while a patch cycle is in progress, or when that cannot be known, since nothing
# would be left to bring the host back into service; otherwise stops the daemon (between two
# steps) and looks again, in case it began a cycle meanwhile (it is then started again).
# ECS_PATCHD_FORCE_REMOVE=1 removes it anyway.
[ "${ECS_PATCHD_FORCE_REMOVE:-}" = 1 ] && exit 0
refuse() {
  echo "ecs-patchd: $1: not removed. Let the cycle finish (ecs-patchd status; ecs-patchd run --resume-only), or set ECS_PATCHD_FORCE_REMOVE=1." >&2
  exit 1
}
idle() { # the journal holds no unfinished cycle
  status=$(/usr/bin/ecs-patchd status --json 2>&1) || refuse "cannot read its state ($status)"
  ! printf '%s\n' "$status" | grep -q '"finished": false'
}
idle || refuse "a patch cycle is in progress"
if [ -d /run/systemd/system ] && systemctl --quiet is-active ecs-patchd.service; then
  systemctl stop ecs-patchd.service || true
  if ! idle; then
    systemctl start ecs-patchd.service || true
    refuse "a patch cycle began while the daemon was stopping"
  fi
fi
exit 0
