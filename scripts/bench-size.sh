#!/usr/bin/env bash
# Binary size against simulator speed, one release-profile option at a time.
# Each variant builds the x86_64 release binary in its own target directory (so variants do
# not rebuild each other) with profile options given as `cargo --config`, then, once all are
# built (so the timings share the machine's conditions), prints the stripped size, the build
# time, the best of three wall times of a 1,000-host simulation and the best of two of a
# 5,000-host one.
# The goal (issue 10): <= 10 MB stripped with every feature, the simulator no more than 10 %
# slower than with the old profile ("o3": fat LTO, one codegen unit, opt-level 3, unwinding
# panics). The release profile in Cargo.toml is the "s+abort" row; the packages are built
# with packaging/size.toml on top, the "s+abort+cold-z" row.
# usage: scripts/bench-size.sh [variant...]   (default: all; 5 to 8 minutes a build on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A variants=(
  [o3]='profile.release.opt-level=3 profile.release.panic="unwind"'
  [o3+abort]='profile.release.opt-level=3 profile.release.panic="abort"'
  [s]='profile.release.opt-level="s" profile.release.panic="unwind"'
  [s+abort]='profile.release.opt-level="s" profile.release.panic="abort"'
  [z+abort]='profile.release.opt-level="z" profile.release.panic="abort"'
  [deps-z,own-o3]='profile.release.opt-level=3 profile.release.panic="abort" profile.release.package."*".opt-level="z"'
  [deps-z,own-s]='profile.release.opt-level="s" profile.release.panic="abort" profile.release.package."*".opt-level="z"'
  [s+abort+cold-z]='profile.release.opt-level="s" profile.release.panic="abort" packaging/size.toml'
)
order=(o3 o3+abort s s+abort z+abort deps-z,own-o3 deps-z,own-s s+abort+cold-z)
(($#)) && order=("$@")

best_of() { # best_of N command... : the least wall time in seconds of N runs
  python3 - "$@" <<'PY'
import subprocess, sys, time
n, cmd = int(sys.argv[1]), sys.argv[2:]
best = None
for _ in range(n):
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    best = min(best or 1e9, time.monotonic() - start)
print(f"{best:.2f}")
PY
}

declare -A built
for name in "${order[@]}"; do
  [[ -n ${variants[$name]:-} ]] || { echo "unknown variant $name (one of: ${!variants[*]})" >&2; exit 2; }
  configs=()
  for setting in ${variants[$name]}; do configs+=(--config "$setting"); done
  start=$(date +%s)
  cargo build --release --locked --quiet "${configs[@]}" --target-dir "target/size-probe/$name"
  built[$name]=$(($(date +%s) - start))
done

printf '%-16s %8s %9s %10s %10s\n' variant "MiB" "build s" "sim 1000" "sim 5000"
for name in "${order[@]}"; do
  bin=target/size-probe/$name/release/ecs-patchd
  mib=$(python3 -c "import os; print(f'{os.path.getsize(\"$bin\") / 1048576:.2f}')")
  sim1000=$(best_of 3 "$bin" simulate --hosts 1000 --max-unavailable 50 --seed 1 --json)
  sim5000=$(best_of 2 "$bin" simulate --hosts 5000 --max-unavailable 100 --seed 1 --json)
  printf '%-16s %8s %9s %10s %10s\n' "$name" "$mib" "${built[$name]}" "$sim1000" "$sim5000"
done
