#!/usr/bin/env bash
# Time out of service of one host, against the stand-ins (moto, IMDS/agent stand-in, real
# dnf or apt in a throwaway root), for a userland-only update, a kernel update, and (dnf) a
# kernel security fix that a loaded live patch covers (packages.kernel_reboot_within = 30d):
# ecs-patchd beside a plain "drain, update, reboot, activate" script run on the same lab.
# Then the drains of twelve simulated weeks of kernel fixes (20 hosts, one fix in four
# without a live patch), without and with live patching.
#
# Out of service: from the DRAINING request until the instance is ACTIVE again (ecs-patchd:
# its journal's `out_of_service_seconds`; no drain: 0). The plain script waits, as such
# scripts do, for runningTasksCount 0 (not for tasks to reach STOPPED) and reboots for every
# update.
#
# usage: scripts/bench-classes.sh [dnf|apt]
set -euo pipefail
cd "$(dirname "$0")/.."
manager=${1:-dnf}
scripts/setup.sh
cargo build --quiet
bin=$PWD/target/debug/ecs-patchd
work=$(mktemp -d -t ecs-patchd-bench.XXXXXX)
trap 'for p in "$work"/*/standin.pid; do kill "$(cat "$p")" 2>/dev/null || true; done; rm -rf "$work"' EXIT

lab() { # NAME SCENARIO: a fresh simulated host
  STANDIN_PYTHON=.venv/bin/python tests/standins/prepare-host.sh "$work/$1" "$manager" "$2" >"$work/$1.log" 2>&1 \
    || { cat "$work/$1.log" >&2; exit 1; }
}

ecs_patchd() { # SCENARIO -> seconds out of service
  lab "patchd-$1" "$1"
  if [[ $1 == livepatch ]]; then
    sed -i 's/^\[packages\]$/[packages]\nkernel_reboot_within = "30d"/' "$work/patchd-$1/config.toml"
  fi
  (
    # shellcheck disable=SC1091
    . "$work/patchd-$1/env"
    for _ in 1 2 3 4; do
      rc=0; "$bin" run >/dev/null 2>&1 || rc=$?
      [[ $rc -eq 75 || $rc -eq 137 ]] || break
    done
    [[ $rc -eq 0 ]] || { echo "ecs-patchd run failed ($rc)" >&2; exit 1; }
    "$bin" status --json | .venv/bin/python -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["out_of_service_seconds"] or 0.0))'
  )
}

plain_script() { # SCENARIO -> seconds out of service
  lab "plain-$1" "$1"
  .venv/bin/python - "$work/plain-$1" "$manager" <<'PY'
import json, os, subprocess, sys, time, tomllib
import boto3
d, manager = sys.argv[1], sys.argv[2]
env = dict(l.removeprefix("export ").split("=", 1) for l in open(f"{d}/env").read().split() if "=" in l)
os.environ.update(env)
state = json.load(open(f"{d}/standin.json"))
host = state["hosts"][0]
config = tomllib.load(open(f"{d}/config.toml", "rb"))
ecs = boto3.client("ecs", region_name=os.environ["AWS_REGION"])
cluster, arn = state["cluster"], host["container_instance_arn"]
def instance():
    return ecs.describe_container_instances(cluster=cluster, containerInstances=[arn])["containerInstances"][0]
start = time.monotonic()
ecs.update_container_instances_state(cluster=cluster, containerInstances=[arn], status="DRAINING")
while instance()["runningTasksCount"] > 0:
    time.sleep(0.1)
if manager == "dnf":
    updates = [["dnf", *config["packages"]["dnf"]["args"], "-y", "upgrade"]]
else:
    apt = ["apt-get", *config["packages"]["apt"]["args"]]
    updates = [[*apt, "update"], [*apt, "-y", "upgrade"]]
for update in updates:
    subprocess.run(update, check=True, capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
subprocess.run(["sh", "-c", '"$@"; true', "sh", *config["host"]["reboot_command"]], check=True)
time.sleep(0.5)
subprocess.run(config["host"]["agent_start_command"], check=True)
while not instance()["agentConnected"]:
    time.sleep(0.1)
ecs.update_container_instances_state(cluster=cluster, containerInstances=[arn], status="ACTIVE")
print(f"{time.monotonic() - start:.1f}")
PY
}

printf '%-8s %-10s %-28s %s\n' manager update "ecs-patchd out of service" "plain script out of service"
scenarios="userland full"
[[ $manager == dnf ]] && scenarios="$scenarios livepatch"
for scenario in $scenarios; do
  case $scenario in full) label=kernel ;; livepatch) label=kernel+livepatch ;; *) label=userland ;; esac
  ours=$(ecs_patchd "$scenario")
  theirs=$(plain_script "$scenario")
  printf '%-8s %-10s %-28s %s\n' "$manager" "$label" "${ours}s" "${theirs}s"
done

"$bin" simulate --hosts 20 --weeks 12 --livepatch-misses 4 --kernel-reboot-within 30d --json \
  | .venv/bin/python -c '
import json, sys
r = json.load(sys.stdin)
a, b = r["without_live_patching"], r["with_live_patching"]
print("twelve simulated weeks, 20 hosts, a kernel fix every week, one in four without a live patch:")
print("  drains without live patching %d, with %d (%d avoided); host-hours out of service %.1f, with %.1f"
      % (a["drains"], b["drains"], a["drains"] - b["drains"], a["host_hours_out"], b["host_hours_out"]))'
