#!/usr/bin/env bash
# Installs what the demo and the tests need on a Debian/Ubuntu machine (run as root or with
# sudo available): dnf, rpm and createrepo_c for the dnf root, apt-utils for the apt
# repository, busybox-static for a shell inside the throwaway roots, systemd for
# systemd-analyze verify of the unit, and moto in .venv.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(dnf dnf-plugins-core rpm createrepo-c apt-utils busybox-static python3-venv systemd)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! .venv/bin/python -c "import moto.server, boto3" 2>/dev/null; then
  echo "setup: installing moto into .venv" >&2
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "moto[server]>=5,<6" "cbor2>=5,<6"
fi
