#!/usr/bin/env bash
# One complete, real patch cycle on this machine with no AWS account: moto plays ECS, a
# stand-in plays IMDSv2 and the ECS agent, real dnf (or apt) updates packages in a throwaway
# root, and the reboot is a script that changes the boot id and kills the daemon, which is
# then started again as boot would. Nothing on the host is changed.
#
# usage: scripts/demo.sh [dnf|apt]
set -euo pipefail
cd "$(dirname "$0")/.."
manager=${1:-dnf}
scripts/setup.sh
cargo build --quiet
bin=$PWD/target/debug/ecs-patchd
work=$(mktemp -d -t ecs-patchd-demo.XXXXXX)
trap 'kill "$(cat "$work/standin.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$work"' EXIT

echo "== preparing a simulated host in $work ($manager, 3 service tasks, one peer host)"
STANDIN_PYTHON=.venv/bin/python tests/standins/prepare-host.sh "$work" "$manager" full
# shellcheck disable=SC1091
. "$work/env"

echo; echo "== ecs-patchd check"
"$bin" check
echo; echo "== ecs-patchd run (the reboot stops it with SIGTERM, as systemd does: exit 75)"
"$bin" run || { rc=$?; [[ $rc -eq 75 || $rc -eq 137 ]]; }
echo; echo "== the host is back: ecs-patchd run --resume-only (as the daemon does when it starts at boot)"
"$bin" run --resume-only
echo; echo "== ecs-patchd status"
"$bin" status
echo; echo "== the cluster, as ECS (moto) sees it"
.venv/bin/python - "$work/standin.json" <<'PY'
import json, sys, urllib.request
url = json.load(open(sys.argv[1]))["moto_url"]
state = json.load(urllib.request.urlopen(urllib.request.Request(url + "/_standin/state", data=b"{}")))
for i in state["instances"]:
    print(f"  {i['arn'].split('/')[-1]}  {i['ec2_instance_id']}  {i['status']:<8}  tasks={i['running_tasks']}")
print(f"  agent version {state['agent_version']}")
PY
