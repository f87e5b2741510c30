#!/bin/sh
# Builds a throwaway root with demo packages at version 1 installed, and a local repository
# offering the updates of SCENARIO, for real dnf or apt. Nothing outside DIR is changed.
#
# usage: make-root.sh dnf|apt DIR SCENARIO
#   full        demo-app 2.0, demo-kernel 2.0 (needs a reboot), ecs-init 1.1.0
#   agent-only  ecs-init 1.1.0
#   none        no update
#   broken         demo-app 2.0 whose install fails (a file conflict), demo-kernel 2.0
#   unsatisfiable  demo-app 2.0 needing a package nobody has (dnf skips it and exits 0)
#   slow        as full, but demo-app 2.0's pre-install script takes SLOW_SECONDS (default 4)
# Writes DIR/packages.toml, the [packages] configuration that confines the daemon to DIR.
set -eu
manager=$1 dir=$(realpath -m "$2") scenario=$3
root=$dir/root repo=$dir/repo build=$dir/build
rm -rf "$dir" && mkdir -p "$root/bin" "$root/var/run" "$repo" "$build"
# Package scripts run inside the root: give it a shell.
cp /bin/busybox "$root/bin/sh"
cp /bin/busybox "$root/bin/sleep"

case $scenario in
  full) updates="demo-app:2.0 demo-kernel:2.0 ecs-init:1.1.0" ;;
  agent-only) updates="ecs-init:1.1.0" ;;
  none) updates="" ;;
  broken) updates="demo-app:2.0:broken demo-kernel:2.0" ;;
  unsatisfiable) updates="demo-app:2.0:unsatisfiable" ;;
  slow) updates="demo-app:2.0:slow demo-kernel:2.0 ecs-init:1.1.0" ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
base="demo-app:1.0 demo-kernel:1.0 ecs-init:1.0.0"

# A package owns /usr/share/NAME/VERSION. A "broken" one also claims demo-kernel's file,
# so installing it fails; an "unsatisfiable" one depends on a package that does not exist.
rpm_package() { # name version [broken|unsatisfiable] -> an .rpm in $build/rpms
  name=$1 version=$2 flaw=${3:-}
  top=$build/rpmbuild
  mkdir -p "$top/SPECS" "$build/rpms"
  {
    echo "Name: $name"; echo "Version: $version"; echo "Release: 1"
    echo "Summary: ecs-patchd test package"; echo "License: MIT"; echo "BuildArch: noarch"
    echo "AutoReqProv: no"
    [ "$flaw" = unsatisfiable ] && echo "Requires: no-such-package"
    # The scriptlet's shell is the root's busybox: say so, or dnf skips the package.
    [ "$flaw" = slow ] && echo "Provides: /bin/sh"
    echo "%description"; echo "test package"
    if [ "$flaw" = slow ]; then echo "%pre"; echo "sleep ${SLOW_SECONDS:-4}"; fi
    echo "%install"
    echo "mkdir -p %{buildroot}/usr/share/$name && echo $version > %{buildroot}/usr/share/$name/VERSION"
    [ "$flaw" = broken ] && echo "mkdir -p %{buildroot}/usr/share/demo-kernel && echo claimed-by-$name > %{buildroot}/usr/share/demo-kernel/VERSION"
    echo "%files"; echo "/usr/share/$name"
    [ "$flaw" = broken ] && echo "/usr/share/demo-kernel/VERSION"
  } > "$top/SPECS/$name.spec"
  rpmbuild -bb --quiet --define "_topdir $top" --define "_rpmdir $build/rpms" "$top/SPECS/$name.spec" >/dev/null 2>&1
}

deb_package() { # name version [broken|unsatisfiable] -> a .deb in $build/debs
  name=$1 version=$2 flaw=${3:-}
  pkg=$build/deb/$name-$version
  mkdir -p "$pkg/DEBIAN" "$pkg/usr/share/$name" "$build/debs"
  echo "$version" > "$pkg/usr/share/$name/VERSION"
  printf 'Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: ecs-patchd tests <tests@localhost>\nDescription: ecs-patchd test package\n' \
    "$name" "$version" > "$pkg/DEBIAN/control"
  [ "$flaw" = unsatisfiable ] && echo "Depends: no-such-package" >> "$pkg/DEBIAN/control"
  if [ "$flaw" = broken ]; then
    mkdir -p "$pkg/usr/share/demo-kernel" && echo "claimed-by-$name" > "$pkg/usr/share/demo-kernel/VERSION"
  fi
  if [ "$flaw" = slow ]; then
    printf '#!/bin/sh\nsleep %s\n' "${SLOW_SECONDS:-4}" > "$pkg/DEBIAN/preinst"
    chmod 755 "$pkg/DEBIAN/preinst"
  fi
  if [ "$name" = demo-kernel ] && [ "$version" != 1.0 ]; then
    # What Debian's kernel packages do through update-notifier.
    printf '#!/bin/sh\n: > /var/run/reboot-required\necho %s >> /var/run/reboot-required.pkgs\n' "$name" > "$pkg/DEBIAN/postinst"
    chmod 755 "$pkg/DEBIAN/postinst"
  fi
  dpkg-deb --root-owner-group --build "$pkg" "$build/debs/${name}_${version}_all.deb" >/dev/null
}

publish() { # list of name:version[:broken]
  for spec in $1; do
    IFS=: read -r name version flaw <<SPEC
$spec
SPEC
    if [ "$manager" = dnf ]; then rpm_package "$name" "$version" "$flaw"; else deb_package "$name" "$version" "$flaw"; fi
  done
  if [ "$manager" = dnf ]; then
    cp "$build"/rpms/noarch/*.rpm "$repo/"
    createrepo_c --update --quiet "$repo" >/dev/null
  else
    cp "$build"/debs/*.deb "$repo/"
    (cd "$repo" && apt-ftparchive packages . > Packages 2>/dev/null && apt-ftparchive release . > Release 2>/dev/null)
  fi
}

if [ "$manager" = dnf ]; then
  mkdir -p "$dir/repos.d" "$root/etc/dnf/plugins/needs-restarting.d"
  printf '[main]\ngpgcheck=0\ninstallonly_limit=3\nkeepcache=1\n' > "$dir/dnf.conf"
  printf '[demo]\nname=demo\nbaseurl=file://%s\ngpgcheck=0\nmetadata_expire=0\n' "$repo" > "$dir/repos.d/demo.repo"
  # needs-restarting -r treats these packages like a kernel.
  echo demo-kernel > "$root/etc/dnf/plugins/needs-restarting.d/demo.conf"
  dnf_args="--installroot=$root --releasever=2023 --config=$dir/dnf.conf --setopt=reposdir=$dir/repos.d --setopt=cachedir=$dir/cache --refresh --disableplugin=local,generate_completion_cache"
  publish "$base"
  # shellcheck disable=SC2086
  dnf -y -q $dnf_args install demo-app demo-kernel ecs-init >/dev/null
  {
    echo "[packages]"; echo 'manager = "dnf"'; echo "[packages.dnf]"
    printf 'args = ['; first=1
    for a in $dnf_args; do [ $first = 1 ] || printf ', '; printf '"%s"' "$a"; first=0; done
    echo ']'
  } > "$dir/packages.toml"
elif [ "$manager" = apt ]; then
  mkdir -p "$root/etc/apt/sources.list.d" "$root/etc/apt/apt.conf.d" "$root/etc/apt/preferences.d" \
    "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/apt/lists/partial" \
    "$root/var/cache/apt/archives/partial" "$root/var/log/apt"
  : > "$root/var/lib/dpkg/status"
  echo "deb [trusted=yes] file:$repo ./" > "$root/etc/apt/sources.list"
  cat > "$dir/apt.conf" <<CONF
Dir "$root/";
Dir::State::status "$root/var/lib/dpkg/status";
Dir::Etc::SourceParts "$root/etc/apt/sources.list.d";
Dir::Etc::Parts "$root/etc/apt/apt.conf.d";
APT::Architecture "$(dpkg --print-architecture)";
DPkg::Options { "--root=$root"; "--log=$root/var/log/dpkg.log"; };
CONF
  publish "$base"
  APT_CONFIG=$dir/apt.conf apt-get -q update >/dev/null
  APT_CONFIG=$dir/apt.conf DEBIAN_FRONTEND=noninteractive apt-get -y -q install demo-app demo-kernel ecs-init >/dev/null
  printf '[packages]\nmanager = "apt"\n[packages.apt]\nargs = ["-c", "%s"]\nreboot_required_file = "%s"\n' \
    "$dir/apt.conf" "$root/var/run/reboot-required" > "$dir/packages.toml"
else
  echo "unknown package manager $manager" >&2; exit 2
fi

# Only now do the updates appear, as on a real mirror.
rm -rf "$build/rpms" "$build/debs" "$build/deb"
[ -z "$updates" ] || publish "$updates"
