#!/usr/bin/env bash
# The whole test suite: installs its dependencies, checks formatting and lints, then runs
# unit and integration tests (the real binary against moto, real dnf and apt in throwaway
# roots).
set -euo pipefail
cd "$(dirname "$0")/.."
# Files the tests create must not be group- or world-writable: ecs-patchd refuses such config.
umask 022
scripts/setup.sh
export ECS_PATCHD_TEST_PYTHON="$PWD/.venv/bin/python"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast
else
  cargo test --no-fail-fast
fi
