#!/bin/sh
# Builds a throwaway root with demo packages at version 1 installed, and a local repository
# offering the updates of SCENARIO, for real dnf or apt. Nothing outside DIR is changed.
#
# usage: make-root.sh dnf|apt DIR SCENARIO
#   full        demo-app 2.0, demo-kernel 2.0 (needs a reboot), the agent 1.1.0
#   agent-only  the agent 1.1.0
#   userland    demo-app 2.0 (installed in place, no drain)
#   runtime     containerd 2.0 and demo-app 2.0 (drain, then the runtime policy)
#   security    demo-app 2.0 from a security advisory (dnf updateinfo; apt's security
#               pocket), the agent 1.1.0 from the ordinary repository
#   release     dnf: release 2023.1 (locked) has demo-app 2.0; release 2023.2 (latest) has
#               demo-app 3.0 and system-release 2023.2
#   obsoletes   dnf: demo-app-ng 2.0, which obsoletes the installed demo-app
#   no-probe    as full, without a reboot probe: dnf's needs-restarting plugin disabled,
#               apt without update-notifier (nothing writes /var/run/reboot-required)
#   none        no update
#   none-no-probe  no update, and no reboot probe (as no-probe)
#   broken         demo-app 2.0 whose install fails (a file conflict), demo-kernel 2.0
#   broken-userland  demo-app 2.0 whose install fails, alone (installed in place)
#   unsatisfiable  demo-app 2.0 needing a package nobody has (dnf skips it and exits 0)
#   slow        as full, but demo-app 2.0's pre-install script takes SLOW_SECONDS (default 4)
#   kmod        kmod-demo 2.0, a kernel module package (1.0 installed)
#   livepatch   dnf: kernel-livepatch-1.0 1.0 installed and loaded (advisory: CVE-2026-0001);
#               offered: kernel-livepatch-1.0 2.0 (CVE-2026-0002) and demo-kernel 2.0, whose
#               advisory names CVE-2026-0001 and CVE-2026-0002 (all covered), and demo-app 2.0.
#               A live patch package ships its module under /var/lib/kpatch/KERNEL/, as
#               Amazon Linux's do; the kpatch stand-in's `load --all` (run here once, as
#               kpatch.service at boot) gives it its /sys/kernel/livepatch/MODULE entry.
#   livepatch-uncovered  as livepatch, but demo-kernel 2.0 also fixes CVE-2026-0003
#   livepatch-unloaded   as livepatch, but kernel-livepatch-1.0 2.0's module fails to load
#   kernels     apt: Ubuntu's kernel layout: linux-image-demo (installed by hand) 2.0 depends
#               on linux-image-2.0-demo, a new package, where 1.0 depended on
#               linux-image-1.0-demo; linux-image-0.9-demo, an older one, is installed too.
#               Both old ones are marked automatically installed: autoremove's to take,
#               but apt keeps the latest and the one before it
# The agent's package is ecs-init with dnf, amazon-ecs-init with apt, as on real hosts.
# dnf repositories are laid out by release (baseurl .../$releasever, the root locked to
# 2023.1 by /etc/dnf/vars/releasever, `latest` the newest), as Amazon Linux 2023's are.
# demo-kernel installs /boot/vmlinuz-VERSION; DIR/osrelease says 1.0 runs.
# Writes DIR/packages.toml, the [packages] configuration that confines the daemon to DIR.
set -eu
manager=$1 dir=$(realpath -m "$2") scenario=$3
root=$dir/root repo=$dir/repo build=$dir/build
rm -rf "$dir" && mkdir -p "$root/bin" "$root/var/run" "$repo" "$build"
# Package scripts run inside the root: give it a shell.
cp /bin/busybox "$root/bin/sh"
cp /bin/busybox "$root/bin/sleep"

agent=ecs-init
[ "$manager" = apt ] && agent=amazon-ecs-init
security=""
case $scenario in
  full|no-probe) updates="demo-app:2.0 demo-kernel:2.0 $agent:1.1.0" ;;
  none-no-probe) updates="" ;;
  agent-only) updates="$agent:1.1.0" ;;
  userland) updates="demo-app:2.0" ;;
  runtime) updates="containerd:2.0 demo-app:2.0" ;;
  security) updates="$agent:1.1.0" security="demo-app:2.0" ;;
  release) updates="demo-app:2.0" ;;
  obsoletes) updates="demo-app-ng:2.0:obsoletes" ;;
  none) updates="" ;;
  broken) updates="demo-app:2.0:broken demo-kernel:2.0" ;;
  broken-userland) updates="demo-app:2.0:broken" ;;
  unsatisfiable) updates="demo-app:2.0:unsatisfiable" ;;
  slow) updates="demo-app:2.0:slow demo-kernel:2.0 $agent:1.1.0" ;;
  kmod) updates="kmod-demo:2.0" ;;
  livepatch|livepatch-uncovered) updates="demo-app:2.0 demo-kernel:2.0 kernel-livepatch-1.0:2.0:livepatch" ;;
  livepatch-unloaded) updates="demo-app:2.0 demo-kernel:2.0 kernel-livepatch-1.0:2.0:livepatch-unloaded" ;;
  kernels) updates="linux-image-demo:2.0:depends-linux-image-2.0-demo linux-image-2.0-demo:2.0" ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
probe=yes
case $scenario in *no-probe) probe=no ;; esac
base="demo-app:1.0 demo-kernel:1.0 $agent:1.0.0 containerd:1.0"
extra_installed=""
[ "$scenario" = kmod ] && base="$base kmod-demo:1.0" extra_installed=kmod-demo
case $scenario in livepatch*) base="$base kernel-livepatch-1.0:1.0:livepatch" extra_installed=kernel-livepatch-1.0 ;; esac
[ "$scenario" = kernels ] && extra_installed="linux-image-demo linux-image-0.9-demo" \
  base="$base linux-image-demo:1.0:depends-linux-image-1.0-demo linux-image-1.0-demo:1.0 linux-image-0.9-demo:0.9"
[ "$manager" = dnf ] && base="$base system-release:2023.1"
echo 1.0 > "$dir/osrelease"

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
    [ "$flaw" = obsoletes ] && echo "Obsoletes: demo-app < 2.0"
    # The scriptlet's shell is the root's busybox: say so, or dnf skips the package.
    [ "$flaw" = slow ] && echo "Provides: /bin/sh"
    echo "%description"; echo "test package"
    if [ "$flaw" = slow ]; then echo "%pre"; echo "sleep ${SLOW_SECONDS:-4}"; fi
    echo "%install"
    echo "mkdir -p %{buildroot}/usr/share/$name && echo $version > %{buildroot}/usr/share/$name/VERSION"
    [ "$name" = demo-kernel ] && echo "mkdir -p %{buildroot}/boot && : > %{buildroot}/boot/vmlinuz-$version"
    [ "$flaw" = broken ] && echo "mkdir -p %{buildroot}/usr/share/demo-kernel && echo claimed-by-$name > %{buildroot}/usr/share/demo-kernel/VERSION"
    case $flaw in livepatch*)
      kver=${name#kernel-livepatch-} module=livepatch_demo_$(echo "$version" | tr . _) content=""
      [ "$flaw" = livepatch-unloaded ] && content=does-not-load
      echo "mkdir -p %{buildroot}/var/lib/kpatch/$kver"
      echo "echo $content > %{buildroot}/var/lib/kpatch/$kver/$module.ko" ;;
    esac
    echo "%files"; echo "/usr/share/$name"
    [ "$name" = demo-kernel ] && echo "/boot/vmlinuz-$version"
    case $flaw in livepatch*) echo "/var/lib/kpatch/$kver/$module.ko" ;; esac
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
  case $flaw in depends-*) echo "Depends: ${flaw#depends-}" >> "$pkg/DEBIAN/control" ;; esac
  if [ "$flaw" = broken ]; then
    mkdir -p "$pkg/usr/share/demo-kernel" && echo "claimed-by-$name" > "$pkg/usr/share/demo-kernel/VERSION"
  fi
  if [ "$flaw" = slow ]; then
    printf '#!/bin/sh\nsleep %s\n' "${SLOW_SECONDS:-4}" > "$pkg/DEBIAN/preinst"
    chmod 755 "$pkg/DEBIAN/preinst"
  fi
  kernel=no image=vmlinuz-$version
  case $name in
    demo-kernel) kernel=yes ;;
    linux-image-*-demo) kernel=yes image=vmlinuz-$version-demo ;;
  esac
  if [ $kernel = yes ]; then
    mkdir -p "$pkg/boot" && : > "$pkg/boot/$image"
  fi
  if [ $kernel = yes ] && [ "$version" != 1.0 ] && [ "$probe" = yes ]; then
    # What Debian's kernel packages do through update-notifier.
    printf '#!/bin/sh\n: > /var/run/reboot-required\necho %s >> /var/run/reboot-required.pkgs\n' "$name" > "$pkg/DEBIAN/postinst"
    chmod 755 "$pkg/DEBIAN/postinst"
  fi
  dpkg-deb --root-owner-group --build "$pkg" "$build/debs/${name}_${version}_all.deb" >/dev/null
}

build_packages() { # list of name:version[:flaw] -> packages in $build
  for spec in $1; do
    IFS=: read -r name version flaw <<SPEC
$spec
SPEC
    if [ "$manager" = dnf ]; then rpm_package "$name" "$version" "$flaw"; else deb_package "$name" "$version" "$flaw"; fi
  done
}

publish() { # list of name:version[:flaw] [repository directory] [apt suite]
  into=${2:-$repo/2023.1}
  rm -rf "$build/rpms" "$build/debs" "$build/deb"
  build_packages "$1"
  mkdir -p "$into"
  if [ "$manager" = dnf ]; then
    for f in "$build"/rpms/noarch/*.rpm; do [ ! -e "$f" ] || cp "$f" "$into/"; done
    createrepo_c --update --quiet "$into" >/dev/null
  else
    for f in "$build"/debs/*.deb; do [ ! -e "$f" ] || cp "$f" "$into/"; done
    (cd "$into" && apt-ftparchive packages . > Packages 2>/dev/null \
      && apt-ftparchive -o "APT::FTPArchive::Release::Suite=${3:-stable}" release . > Release 2>/dev/null)
  fi
}

# dnf: an updateinfo.xml with one security advisory for each of $1 (name:version ...).
advise() {
  into=$repo/2023.1
  {
    echo '<?xml version="1.0" encoding="UTF-8"?>'; echo '<updates>'
    for spec in $1; do
      name=${spec%%:*} rest=${spec#*:} version=${rest%%:*}
      echo "<update from=\"tests@localhost\" status=\"final\" type=\"security\" version=\"2.0\">"
      echo "<id>ALAS2023-TEST-$name</id><title>$name security fix</title><severity>Important</severity>"
      echo '<issued date="2026-01-01 00:00:00"/><updated date="2026-01-01 00:00:00"/><description>test</description>'
      echo "<pkglist><collection short=\"demo\"><name>demo</name><package name=\"$name\" version=\"$version\" release=\"1\" epoch=\"0\" arch=\"noarch\">"
      echo "<filename>$name-$version-1.noarch.rpm</filename></package></collection></pkglist></update>"
    done
    echo '</updates>'
  } > "$build/updateinfo.xml"
  modifyrepo_c "$build/updateinfo.xml" "$into/repodata" >/dev/null
}

common_settings() {
  printf 'extra_reboot_packages = ["demo-kernel"]\nboot_dir = "%s"\nrunning_kernel = "%s"\n' "$root/boot" "$dir/osrelease"
}

# The live patch tools, confined to the root: the kernel's livepatch directory (absent until
# the kpatch stand-in loads a module), the kpatch and canonical-livepatch stand-ins.
livepatch_settings() {
  here=$(cd "$(dirname "$0")" && pwd)
  printf '[packages.livepatch]\nkernel_packages = ["demo-kernel"]\nsysfs = "%s"\nservice_check = ["true"]\n' "$root/sys/kernel/livepatch"
  printf 'kpatch_command = ["%s", "%s", "%s"]\ncanonical_command = ["%s", "%s"]\n' "$here/kpatch.sh" "$root" \
    "$dir/osrelease" "$here/canonical-livepatch.sh" "$dir/livepatch-status.json"
}

# dnf: an updateinfo.xml with one security advisory for each of $1 (name:version:CVE,CVE...).
advise_cves() {
  {
    echo '<?xml version="1.0" encoding="UTF-8"?>'; echo '<updates>'
    for spec in $1; do
      IFS=: read -r name version cves <<SPEC
$spec
SPEC
      echo "<update from=\"tests@localhost\" status=\"final\" type=\"security\" version=\"2.0\">"
      echo "<id>ALAS2023-TEST-$name-$version</id><title>$name $version security fix</title><severity>Important</severity>"
      echo '<issued date="2026-01-01 00:00:00"/><updated date="2026-01-01 00:00:00"/><description>test</description><references>'
      for cve in $(echo "$cves" | tr , ' '); do
        echo "<reference href=\"https://example.com/$cve\" id=\"$cve\" title=\"$cve\" type=\"cve\"/>"
      done
      echo "</references><pkglist><collection short=\"demo\"><name>demo</name><package name=\"$name\" version=\"$version\" release=\"1\" epoch=\"0\" arch=\"noarch\">"
      echo "<filename>$name-$version-1.noarch.rpm</filename></package></collection></pkglist></update>"
    done
    echo '</updates>'
  } > "$build/updateinfo.xml"
  modifyrepo_c "$build/updateinfo.xml" "$repo/2023.1/repodata" >/dev/null
}

if [ "$manager" = dnf ]; then
  mkdir -p "$dir/repos.d" "$root/etc/dnf/plugins/needs-restarting.d" "$root/etc/dnf/vars"
  printf '[main]\ngpgcheck=0\ninstallonly_limit=3\nkeepcache=1\n' > "$dir/dnf.conf"
  printf '[demo]\nname=demo\nbaseurl=file://%s/$releasever\ngpgcheck=0\nmetadata_expire=0\n' "$repo" > "$dir/repos.d/demo.repo"
  echo 2023.1 > "$root/etc/dnf/vars/releasever"
  # needs-restarting -r would treat demo-kernel like a kernel if named in
  # needs-restarting.d/, and compares install times with the real machine's boot, which no
  # stand-in reboot moves: a test that wants it to say "reboot" writes the file itself.
  dnf_args="--installroot=$root --config=$dir/dnf.conf --setopt=reposdir=$dir/repos.d --setopt=cachedir=$dir/cache --refresh --disableplugin=local,generate_completion_cache"
  [ "$probe" = no ] && dnf_args="$dnf_args --disableplugin=needs-restarting"
  publish "$base"
  ln -s 2023.1 "$repo/latest"
  # shellcheck disable=SC2086
  dnf -y -q $dnf_args install demo-app demo-kernel $agent containerd system-release $extra_installed >/dev/null
  # The boot's kpatch.service: the installed live patch is loaded.
  case $scenario in livepatch*) "$(dirname "$0")/kpatch.sh" "$root" "$dir/osrelease" load --all >/dev/null ;; esac
  {
    echo "[packages]"; echo 'manager = "dnf"'; common_settings; echo "[packages.dnf]"
    printf 'args = ['; first=1
    for a in $dnf_args; do [ $first = 1 ] || printf ', '; printf '"%s"' "$a"; first=0; done
    echo ']'
    echo "automatic_config = \"$root/etc/dnf/automatic.conf\""
    livepatch_settings
  } > "$dir/packages.toml"
elif [ "$manager" = apt ]; then
  mkdir -p "$root/etc/apt/sources.list.d" "$root/etc/apt/apt.conf.d" "$root/etc/apt/preferences.d" \
    "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/apt/lists/partial" \
    "$root/var/cache/apt/archives/partial" "$root/var/log/apt"
  : > "$root/var/lib/dpkg/status"
  # update-notifier-common's script: its presence makes /var/run/reboot-required the probe.
  if [ "$probe" = yes ]; then
    mkdir -p "$root/usr/share/update-notifier"
    printf '#!/bin/sh\n' > "$root/usr/share/update-notifier/notify-reboot-required"
  fi
  echo "deb [trusted=yes] file:$repo/2023.1 ./" > "$root/etc/apt/sources.list"
  echo "deb [trusted=yes] file:$repo/security ./" > "$root/etc/apt/sources.list.d/security.list"
  publish "" "$repo/security" stable-security
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
  APT_CONFIG=$dir/apt.conf DEBIAN_FRONTEND=noninteractive apt-get -y -q install demo-app demo-kernel $agent containerd $extra_installed >/dev/null
  [ "$scenario" != kernels ] || APT_CONFIG=$dir/apt.conf apt-mark auto linux-image-0.9-demo >/dev/null
  {
    printf '[packages]\nmanager = "apt"\n'; common_settings
    printf '[packages.apt]\nargs = ["-c", "%s"]\nreboot_required_file = "%s"\nreboot_notifier = "%s"\n' \
      "$dir/apt.conf" "$root/var/run/reboot-required" "$root/usr/share/update-notifier/notify-reboot-required"
    livepatch_settings
  } > "$dir/packages.toml"
else
  echo "unknown package manager $manager" >&2; exit 2
fi

# Only now do the updates appear, as on a real mirror.
[ -z "$updates" ] || publish "$updates"
if [ -n "$security" ]; then
  if [ "$manager" = dnf ]; then publish "$security" && advise "$security"; else publish "$security" "$repo/security" stable-security; fi
fi
kernel_fixes=CVE-2026-0001,CVE-2026-0002
[ "$scenario" = livepatch-uncovered ] && kernel_fixes=$kernel_fixes,CVE-2026-0003
case $scenario in livepatch*)
  [ "$manager" = dnf ] && advise_cves "kernel-livepatch-1.0:1.0:CVE-2026-0001 kernel-livepatch-1.0:2.0:CVE-2026-0002 demo-kernel:2.0:$kernel_fixes" ;;
esac
if [ "$scenario" = release ]; then
  # A newer release: a copy of 2023.1 plus its own updates; `latest` moves to it.
  cp -r "$repo/2023.1" "$repo/2023.2"
  publish "demo-app:3.0 system-release:2023.2" "$repo/2023.2"
  ln -sfn 2023.2 "$repo/latest"
fi
