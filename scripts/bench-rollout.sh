#!/usr/bin/env bash
# Rollout benchmark on the simulator (release build): makespan against the ideal
# ceil(N/k) x per-host slot time, and fleet-wide ECS read rates, for N=200,k=10 and
# N=1000,k=50. Targets: ratio <= 1.05; ECS reads <= 5/s; 0 ECS calls from hosts that are
# only waiting.
# usage: scripts/bench-rollout.sh [seed]
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-1}
cargo build --release --quiet
for case in "200 10" "1000 50"; do
  read -r hosts k <<<"$case"
  echo "== N=$hosts k=$k (seed $seed)"
  ./target/release/ecs-patchd simulate --hosts "$hosts" --max-unavailable "$k" --seed "$seed"
  echo
done
