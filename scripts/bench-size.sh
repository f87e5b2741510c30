#!/usr/bin/env bash
# Binary size against simulator speed, one release-profile option at a time.
# Each variant builds the x86_64 release binary in its own target directory (so variants do
# not rebuild each other) with profile options given as `cargo --config`, then, once all are
# built, prints the stripped size, the build time, and the median wall times of a 1,000-host
# and a 5,000-host simulation, run interleaved across the variants.
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

declare -A built
for name in "${order[@]}"; do
  [[ -n ${variants[$name]:-} ]] || { echo "unknown variant $name (one of: ${!variants[*]})" >&2; exit 2; }
  configs=()
  for setting in ${variants[$name]}; do configs+=(--config "$setting"); done
  start=$(date +%s)
  cargo build --release --locked --quiet "${configs[@]}" --target-dir "target/size-probe/$name"
  built[$name]=$(($(date +%s) - start))
done

# The simulations run interleaved, three rounds of every variant (1,000 hosts twice, 5,000
# once a round), so that what else the machine does weighs on every variant alike; the
# medians are printed.
bins=()
for name in "${order[@]}"; do bins+=("$name=target/size-probe/$name/release/ecs-patchd" "${built[$name]}"); done
python3 - "${bins[@]}" <<'PY'
import os, statistics, subprocess, sys, time
args = sys.argv[1:]
variants = [(args[i].split("=", 1)[0], args[i].split("=", 1)[1], args[i + 1]) for i in range(0, len(args), 2)]
times = {name: {1000: [], 5000: []} for name, _, _ in variants}
for _ in range(3):
    for name, binary, _ in variants:
        for hosts, k, runs in ((1000, 50, 2), (5000, 100, 1)):
            for _ in range(runs):
                start = time.monotonic()
                subprocess.run([binary, "simulate", "--hosts", str(hosts), "--max-unavailable", str(k), "--seed", "1", "--json"],
                               check=True, stdout=subprocess.DEVNULL)
                times[name][hosts].append(time.monotonic() - start)
print(f"{'variant':16} {'MiB':>8} {'build s':>9} {'sim 1000':>10} {'sim 5000':>10}")
for name, binary, built in variants:
    mib = os.path.getsize(binary) / 1048576
    print(f"{name:16} {mib:8.2f} {built:>9} {statistics.median(times[name][1000]):10.2f} {statistics.median(times[name][5000]):10.2f}")
PY
