#!/bin/sh
# Stand-in for kpatch (dynup/kpatch's `kpatch list`) in a throwaway root: the loaded modules
# are the root's sys/kernel/livepatch entries, the installed ones its var/lib/kpatch/KERNEL/*.ko
# files; the output is kpatch's own (print_patch_info: "$modname [$state]", then
# "$MODNAME (<kernel>)").
# usage: kpatch.sh ROOT list
set -eu
root=$1
[ "${2:-}" = list ] || { echo "kpatch.sh: only 'list' is stood in" >&2; exit 1; }
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
done
