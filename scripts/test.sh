#!/usr/bin/env bash
# The whole test suite, in stages, each timed:
#   setup     installs every test dependency: apt packages, moto in .venv, the packaging
#             tools (cargo-deb, cargo-generate-rpm, zig), the VM's tools
#   lint      cargo fmt --check and clippy
#   build     the debug build of the binary and every test
#   tests     unit and integration tests (the real binary against moto, real dnf and apt in
#             throwaway roots), with nextest
#   packages  the release packages (scripts/package, built in the background from the end of
#             the setup, beside the other stages), installed and checked in throwaway roots
#             (scripts/check-packages)
#   vm        the .deb under real systemd, through a real reboot, in a virtual machine
# A failed stage does not hide the others: every stage that does not depend on it still
# runs, one that does is reported as not run, and the run ends with a table of the stages,
# their times, and "stages: N passed, M failed". Exit 0 only when every stage passed.
set -uo pipefail
cd "$(dirname "$0")/.."
# Files the tests create must not be group- or world-writable: ecs-patchd refuses such config.
umask 022
export ECS_PATCHD_TEST_PYTHON="$PWD/.venv/bin/python"
# 500 seeded simulations (the test's own default is 1,000): enough to find what the seeds
# have found so far (scripts/mutants.sh), at half the time.
export ECS_PATCHD_SIM_SEEDS=${ECS_PATCHD_SIM_SEEDS:-500}
# The debug profile (Cargo.toml) is cut for this run's two cores. Measured on this machine,
# from an empty target directory: the test build took 563 s (1,074 s of CPU, 7.9 GB) with full
# debug information, 492 s (896 s, 2.8 GB) with line tables for this crate alone; opt-level 1
# for this crate costs 124 s more of CPU and, with tokio, serde_json and rand_chacha at 1 too,
# ten seeds of a simulation part run in 1.2 s instead of 4.5 s.

started=$SECONDS
table=()
passed=0 failed=0

minutes() { # minutes SECONDS: "m min ss s"
  printf '%d min %02d s' $(($1 / 60)) $(($1 % 60))
}

record() { # record STAGE RESULT SECONDS [NOTE]
  local line
  line=$(printf '%-13s %-8s %s%s' "$1" "$2" "$(minutes "$3")" "${4:+  ($4)}")
  table+=("$line")
  echo "=== stage $line"
  case $2 in
    ok) passed=$((passed + 1)) ;;
    FAILED) failed=$((failed + 1)) ;;
  esac
}

stage() { # stage NAME COMMAND...: runs one stage and records its outcome and time
  local name=$1 t0=$SECONDS
  shift
  echo "=== stage $name: $*"
  if "$@"; then
    record "$name" ok $((SECONDS - t0))
  else
    record "$name" FAILED $((SECONDS - t0))
    return 1
  fi
}

not_run() { # not_run NAME WHY
  record "$1" "not run" 0 "$2"
  failed=$((failed + 1))
}

finish() {
  echo
  echo "=== stages (whole run $(minutes $((SECONDS - started))))"
  printf '  %s\n' "${table[@]}"
  echo "stages: $passed passed, $failed failed"
  ((failed == 0))
  exit
}

setup() {
  scripts/setup.sh && scripts/setup.sh packaging && scripts/setup.sh vm
}

lint() {
  cargo fmt --all -- --check && cargo clippy --all-targets --locked --quiet -- -D warnings
}

if ! stage setup setup; then
  for later in lint build tests packages vm; do not_run "$later" "setup failed"; done
  finish
fi

# The release packages build beside everything else, in a target directory of their own (so
# that neither build waits on the other's lock), in a session of their own (setsid), which
# the kernel's autogroup scheduling gives the same CPU share as ours: the two builds share
# the cores, and the package build takes what the tests (mostly waiting on moto, dnf and apt)
# leave idle. From a fresh clone it was done before the tests were (scripts/fresh-ci).
mkdir -p target
packaging_started=$SECONDS
CARGO_TARGET_DIR=target/package setsid -w scripts/package >target/package.log 2>&1 &
packaging=$!
trap 'kill -- -"$packaging" 2>/dev/null || true' EXIT

stage lint lint
unit_and_integration_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast
  else
    cargo test --locked --no-fail-fast
  fi
}

# nextest runs what `cargo test --no-run` built.
if stage build cargo test --locked --no-run; then
  stage tests unit_and_integration_tests
else
  not_run tests "the build failed"
fi

echo "=== waiting for the package build (started $(minutes $((SECONDS - packaging_started))) ago)"
wait_started=$SECONDS
if wait "$packaging"; then
  trap - EXIT
  cat target/package.log
  record package-build ok $((SECONDS - packaging_started)) "in the background; $(minutes $((SECONDS - wait_started))) waited for after the tests"
  if stage packages scripts/check-packages; then
    # The .deb under real systemd, through a real reboot, in a virtual machine.
    stage vm scripts/vm-test
  else
    not_run vm "the packages failed their checks"
  fi
else
  trap - EXIT
  echo "scripts/package failed:" >&2
  tail -40 target/package.log >&2
  record package-build FAILED $((SECONDS - packaging_started))
  not_run packages "the package build failed"
  not_run vm "the package build failed"
fi
finish
