#!/bin/sh
# Stand-in for kpatch (dynup/kpatch's kpatch/kpatch) in a throwaway root: the installed patch
# modules are the root's var/lib/kpatch/KERNEL/*.ko files, the loaded ones its
# sys/kernel/livepatch entries.
#   list        kpatch's own output (print_patch_info: "$modname [$state]", then
#               "$MODNAME (<kernel>)")
#   load --all  what kpatch.service runs at boot: each module installed for the running
#               kernel (the first line of OSRELEASE) that is not enabled is loaded, as an
#               enabled entry out of transition; a module whose file reads "does-not-load"
#               fails as insmod does, and the command with it ("failed to load module")
# usage: kpatch.sh ROOT OSRELEASE list|load --all
set -eu
root=$1 osrelease=$2
shift 2
case "$*" in
  list)
    echo "Loaded patch modules:"
    for d in "$root"/sys/kernel/livepatch/*/; do
      [ -d "$d" ] || continue
      name=$(basename "$d") state=disabled
      [ "$(cat "$d/enabled" 2>/dev/null)" = 1 ] && state=enabled
      [ "$(cat "$d/transition" 2>/dev/null)" = 1 ] && state="$state..."
      echo "$name [$state]"
    done
    echo
    echo "Installed patch modules:"
    for ko in "$root"/var/lib/kpatch/*/*.ko; do
      [ -e "$ko" ] || continue
      kernel=$(basename "$(dirname "$ko")")
      echo "$(basename "$ko" .ko) ($kernel)"
    done ;;
  "load --all")
    for ko in "$root/var/lib/kpatch/$(head -n1 "$osrelease")"/*.ko; do
      [ -e "$ko" ] || continue
      name=$(basename "$ko" .ko | tr - _)
      entry=$root/sys/kernel/livepatch/$name
      if [ "$(cat "$entry/enabled" 2>/dev/null)" = 1 ]; then
        echo "module named $name already loaded and enabled"
        continue
      fi
      echo "loading patch module: $ko"
      if [ "$(cat "$ko")" = does-not-load ]; then
        echo "insmod: ERROR: could not insert module $ko: Invalid parameters" >&2
        echo "kpatch: failed to load module $ko" >&2
        exit 1
      fi
      mkdir -p "$entry"
      echo 1 > "$entry/enabled"
      echo 0 > "$entry/transition"
    done ;;
  *) echo "kpatch.sh: only 'list' and 'load --all' are stood in" >&2; exit 1 ;;
esac
