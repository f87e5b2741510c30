#!/usr/bin/env bash
# The whole test suite, in stages, each timed:
#   setup-packaging  the packaging tools (cargo-deb, cargo-generate-rpm, zig, qemu-user);
#                    the release packages (scripts/package) then build in the background,
#                    beside every stage below but the last two
#   setup            the tests' tools: apt packages, promtool, moto in .venv, the VM's tools
#   lint+build       cargo fmt --check, then the debug build of the binary and every test,
#                    with clippy's lints (-D warnings) on every target of this crate
#   build            only when lint+build failed: the same build without clippy, so that a
#                    lint does not keep the tests from running
#   tests            unit and integration tests (the real binary against moto, real dnf and
#                    apt in throwaway roots), with nextest
#   package-build    when the background build ended
#   packages         the packages installed and checked in throwaway roots
#                    (scripts/check-packages)
#   vm               the .deb under real systemd, through a real reboot, in a virtual machine
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
  line=$(printf '%-15s %-8s %s%s' "$1" "$2" "$(minutes "$3")" "${4:+  ($4)}")
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

# The tests' tools: apt packages (dnf, createrepo_c, systemd, ...), promtool, moto in .venv,
# and what the VM test needs.
setup_for_tests() {
  scripts/setup.sh && scripts/setup.sh vm
}

# Clippy lints this crate in the test build itself: cargo runs clippy-driver (rustc with
# clippy's lints) in place of rustc for this crate's targets (RUSTC_WORKSPACE_WRAPPER, what
# `cargo clippy` sets for `cargo check`), so the dependencies are compiled once, for the
# tests, rather than once more, metadata only, for clippy: `cargo clippy --all-targets` from
# an empty target directory took 151 s (263 s of CPU) on this 2-core machine. CLIPPY_ARGS is
# how `cargo clippy -- -D warnings` hands `-D warnings` to clippy-driver (each argument
# followed by __CLIPPY_HACKERY__); the lint first checks that the driver still reads it. The
# debug test binaries are then clippy-driver's, which turns MIR optimisations off: fifty
# seeds of a simulation part ran in 9.0 to 9.5 s with either compiler. The release packages
# are built by rustc alone.
clippy_driver="$(rustc --print sysroot)/bin/clippy-driver"
clippy_env=(RUSTC_WORKSPACE_WRAPPER="$clippy_driver" CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__)

clippy_denies_warnings() { # given CLIPPY_ARGS, clippy-driver refuses a function with a lint
  local canary out
  canary=$(mktemp -d)
  printf 'pub fn length(v: &Vec<u8>) -> usize {\n    v.len()\n}\n' >"$canary/lib.rs"
  out=$(env "${clippy_env[@]}" "$clippy_driver" --edition 2024 --crate-type lib --emit metadata \
    --out-dir "$canary" "$canary/lib.rs" 2>&1) && out="compiled, with: $out"
  rm -rf "$canary"
  [[ $out == *'`-D clippy::ptr-arg` implied by `-D warnings`'* ]] && return
  echo "lint: clippy-driver did not deny clippy::ptr_arg given CLIPPY_ARGS=$(printf '%q' "${clippy_env[1]#*=}"): $out" >&2
  return 1
}

lint_and_build() {
  cargo fmt --all -- --check && clippy_denies_warnings && env "${clippy_env[@]}" cargo test --locked --no-run
}

unit_and_integration_tests() { # in the build's environment (test_env), so nothing is rebuilt
  if cargo nextest --version >/dev/null 2>&1; then
    env "${test_env[@]}" cargo nextest run --locked --no-fail-fast
  else
    env "${test_env[@]}" cargo test --locked --no-fail-fast
  fi
}

if ! stage setup-packaging scripts/setup.sh packaging; then
  for later in setup lint+build tests packages vm; do not_run "$later" "setup-packaging failed"; done
  finish
fi

# The release packages build beside everything else, from the end of the packaging tools'
# setup (their first minutes overlap the rest of the setup, which mostly downloads), in a
# target directory of their own (so that neither build waits on the other's lock), in a
# session of their own (setsid), which the kernel's autogroup scheduling gives the same CPU
# share as ours: the two builds share the cores, and the package build takes what the tests
# (mostly waiting on moto, dnf and apt) leave idle.
# It notes when it ended (target/package.ended), so that the table can say whether the tests
# waited for it or it for them.
mkdir -p target
rm -f target/package.ended
packaging_started=$SECONDS
CARGO_TARGET_DIR=target/package setsid -w \
  bash -c 'scripts/package; status=$?; echo "$SECONDS" >target/package.ended; exit "$status"' \
  >target/package.log 2>&1 &
packaging=$!
trap 'kill -- -"$packaging" 2>/dev/null || true' EXIT

stage setup setup_for_tests
set_up=$?

# nextest runs what the build stage built, in the same environment.
built=true
test_env=("${clippy_env[@]}")
if ! stage lint+build lint_and_build; then
  # Built again without clippy, so that a lint does not keep the tests from running: the
  # dependencies are not compiled again, only this crate's targets.
  test_env=()
  stage build cargo test --locked --no-run || built=false
fi
if ((set_up != 0)); then
  not_run tests "setup failed"
elif ! $built; then
  not_run tests "the build failed"
else
  stage tests unit_and_integration_tests
fi

echo "=== waiting for the package build (started $(minutes $((SECONDS - packaging_started))) ago)"
waited_from=$SECONDS
wait "$packaging"
packaged=$?
trap - EXIT
# Seconds from its start, by its own shell's clock (the wait's, should it not have written it).
took=$(cat target/package.ended 2>/dev/null) || took=$((SECONDS - packaging_started))
if ((packaging_started + took <= waited_from)); then
  when="in the background; ended $(minutes $((waited_from - packaging_started - took))) before the stages above"
else
  when="in the background; the stages above waited $(minutes $((packaging_started + took - waited_from))) for it"
fi
if ((packaged == 0)); then
  cat target/package.log
  record package-build ok "$took" "$when"
  if ! stage packages scripts/check-packages; then
    not_run vm "the packages failed their checks"
  elif ((set_up != 0)); then
    not_run vm "setup failed"
  else
    # The .deb under real systemd, through a real reboot, in a virtual machine.
    stage vm scripts/vm-test
  fi
else
  echo "scripts/package failed:" >&2
  tail -40 target/package.log >&2
  record package-build FAILED "$took" "$when"
  not_run packages "the package build failed"
  not_run vm "the package build failed"
fi
finish
