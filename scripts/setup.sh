#!/usr/bin/env bash
# Installs what the demo and the tests need on a Debian/Ubuntu machine (run as root or with
# sudo available): dnf, rpm and createrepo_c for the dnf root, apt-utils for the apt
# repository, busybox-static for a shell inside the throwaway roots, systemd for
# systemd-analyze verify of the unit, libfaketime to move a run's wall clock (tests/faults.rs),
# promtool (tests/alerts.rs) unpacked from Debian's prometheus package into .cache/prometheus
# (installing the package would also start a Prometheus server), and moto in .venv.
# `scripts/setup.sh packaging` installs what scripts/package and scripts/check-packages need
# instead: zig and cargo-zigbuild (glibc 2.26 builds), cfn-lint, cargo-deb and
# cargo-generate-rpm, the aarch64 Rust target, and qemu-user with arm64's glibc to run the
# aarch64 binary.
# `scripts/setup.sh vm` installs what scripts/vm-test needs: qemu-system-x86, mmdebstrap and
# Debian's archive keyring (the guest; the keyring for Ubuntu hosts), e2fsprogs (its image),
# apt-utils (its repository), systemd (journalctl, to read its journal off the image) and
# moto in .venv.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Versions the packages were last built and checked with.
ZIGLANG=0.17.1 CARGO_ZIGBUILD=0.24.1 CFN_LINT=1.58.0 CARGO_DEB=3.8.0 CARGO_GENERATE_RPM=0.21.1

packages=(dnf dnf-plugins-core rpm createrepo-c apt-utils busybox-static python3-venv systemd libfaketime)
[[ ${1:-} == packaging ]] && packages=(rpm dnf busybox-static python3-venv systemd binutils qemu-user libc6-arm64-cross)
[[ ${1:-} == vm ]] && packages=(qemu-system-x86 mmdebstrap debian-archive-keyring e2fsprogs apt-utils python3-venv systemd)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=""
[[ $(id -u) -eq 0 ]] || sudo=sudo
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ -z ${1:-} && ! -x .cache/prometheus/usr/bin/promtool ]]; then
  echo "setup: unpacking promtool from Debian's prometheus package" >&2
  mkdir -p .cache/prometheus
  # apt-get download needs the package lists; a machine that had every package may have none.
  (cd .cache && { apt-get download -qq prometheus 2>/dev/null || { $sudo apt-get update -qq && apt-get download -qq prometheus; }; })
  dpkg-deb -x .cache/prometheus_*.deb .cache/prometheus
  rm -f .cache/prometheus_*.deb
fi

[[ -x .venv/bin/pip ]] || python3 -m venv .venv
pip=(.venv/bin/pip install -q --disable-pip-version-check)

if [[ ${1:-} == packaging ]]; then
  # pip and cargo skip what is already installed at these versions.
  "${pip[@]}" "ziglang==$ZIGLANG" "cargo-zigbuild==$CARGO_ZIGBUILD" "cfn-lint==$CFN_LINT"
  # Built with the dev profile (--debug): the tools only copy and compress a few files, and
  # from an empty cargo home the whole setup, both tools included, took 2 min 14 s.
  cargo install --quiet --locked --debug "cargo-deb@$CARGO_DEB" "cargo-generate-rpm@$CARGO_GENERATE_RPM"
  rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
  exit 0
fi

if ! .venv/bin/python -c "import moto.server, boto3" 2>/dev/null; then
  echo "setup: installing moto into .venv" >&2
  "${pip[@]}" "moto[server]>=5,<6" "cbor2>=5,<6"
fi
