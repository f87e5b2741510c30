#!/usr/bin/env bash
# Rollout benchmark on the simulator (release build), for N=200/k=10, N=1,000/k=50 and
# N=5,000/k=100 (ECS's largest cluster): makespan against the ideal ceil(N/k) x mean slot
# time, fleet-wide ECS reads (busiest 10 s and 60 s), DynamoDB capacity on the busiest key
# (per second, as DynamoDB counts it), the largest item, throttled requests, the on-demand
# cost of the roll, and the simulator's wall time.
# Goals: ratio <= 1.05; ECS reads <= 5/s over any 10 s; RCU/s and WCU/s per key <= a third
# of a partition's 3,000 and 1,000; items far below 400 KB; no throttling; N=1,000 in
# <= 10 s and N=5,000 in <= 60 s of wall time.
# usage: scripts/bench-rollout.sh [seed]
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-1}
cargo build --release --quiet
printf '%-14s %6s %9s %9s %9s %9s %10s %9s %8s %8s\n' \
  "case" "ratio" "reads/10s" "reads/60s" "RCU/s/key" "WCU/s/key" "item KB" "throttled" "dollars" "wall s"
for case in "200 10" "1000 50" "5000 100"; do
  read -r hosts k <<<"$case"
  start=$(date +%s.%N)
  ./target/release/ecs-patchd simulate --hosts "$hosts" --max-unavailable "$k" --seed "$seed" --json >/tmp/bench-rollout.$$.json
  end=$(date +%s.%N)
  python3 - "$hosts" "$k" "$start" "$end" /tmp/bench-rollout.$$.json <<'EOF'
import json, sys
hosts, k, start, end, path = sys.argv[1:]
r = json.load(open(path))
u = r["store"]
print(f"{'N=' + hosts + ' k=' + k:<14} {r['ratio']:6.3f} {r['peak_ecs_reads_10s']:9.2f} {r['peak_ecs_reads_60s']:9.2f} "
      f"{u['peak_read_units_per_key'][0]:9.1f} {u['peak_write_units_per_key'][0]:9.1f} "
      f"{u['largest_item'][0] / 1024:10.1f} {u['throttled']:9d} {r['store_dollars']:8.4f} {float(end) - float(start):8.1f}")
print(f"{'':14} busiest keys: reads {u['peak_read_units_per_key'][1]}, writes {u['peak_write_units_per_key'][1]}; "
      f"largest item {u['largest_item'][1]}; patched {r['patched']}/{hosts}, peak out {r['peak_out']}")
EOF
done
rm -f /tmp/bench-rollout.$$.json
