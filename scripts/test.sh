#!/usr/bin/env bash
# The whole test suite: installs its dependencies, checks formatting and lints, runs unit
# and integration tests (the real binary against moto, real dnf and apt in throwaway roots),
# and builds the packages (scripts/package), then installs and checks them in throwaway
# roots (scripts/check-packages) and boots the .deb in a virtual machine (scripts/vm-test).
set -euo pipefail
cd "$(dirname "$0")/.."
# Files the tests create must not be group- or world-writable: ecs-patchd refuses such config.
umask 022
scripts/setup.sh
export ECS_PATCHD_TEST_PYTHON="$PWD/.venv/bin/python"
# 500 seeded simulations (the test's own default is 1,000): about 3 minutes less, which the
# package build beside the tests needs to keep the run before the VM test under 30 minutes.
export ECS_PATCHD_SIM_SEEDS=${ECS_PATCHD_SIM_SEEDS:-500}
cargo fmt --all -- --check

# The packages build on one core beside the lints and the tests (which mostly wait on moto,
# dnf and apt), in a target directory of their own so that neither waits on the other's lock.
mkdir -p target
CARGO_BUILD_JOBS=1 CARGO_TARGET_DIR=target/package setsid -w scripts/package >target/package.log 2>&1 &
packaging=$!
trap 'kill -- -"$packaging" 2>/dev/null || true' EXIT

cargo clippy --all-targets --quiet -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast
else
  cargo test --no-fail-fast
fi

if ! wait "$packaging"; then
  echo "scripts/package failed:" >&2
  tail -40 target/package.log >&2
  exit 1
fi
trap - EXIT
cat target/package.log
scripts/check-packages
# The .deb under real systemd, through a real reboot, in a virtual machine.
scripts/vm-test
