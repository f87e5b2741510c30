#!/bin/sh
# Prepares one simulated EC2 host in DIR for a real ecs-patchd run with no AWS account:
# a throwaway package root (make-root.sh), the AWS/IMDS/agent stand-ins (aws_standin.py,
# left running: its pid is in DIR/standin.pid), a boot id file, an ecs.config, the daemon's
# DIR/config.toml and DIR/env (the variables that point the daemon at the stand-ins).
#
# usage: prepare-host.sh DIR dnf|apt SCENARIO [aws_standin.py options...]
# STANDIN_PYTHON names a python with moto installed (default: python3).
set -eu
dir=$(realpath -m "$1") manager=$2 scenario=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
python=${STANDIN_PYTHON:-python3}

"$here/make-root.sh" "$manager" "$dir/pkg" "$scenario"
"$python" "$here/aws_standin.py" --state-file "$dir/standin.json" "$@" > "$dir/standin.log" 2>&1 &
echo $! > "$dir/standin.pid"
tries=0
until [ -f "$dir/standin.json" ]; do
  tries=$((tries + 1))
  if [ $tries -gt 300 ] || ! kill -0 "$(cat "$dir/standin.pid")" 2>/dev/null; then
    echo "the stand-ins did not start; their log:" >&2; cat "$dir/standin.log" >&2; exit 1
  fi
  sleep 0.1
done
field() { "$python" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$dir/standin.json" "$1"; }
control=$(field moto_url)

cat /proc/sys/kernel/random/uuid > "$dir/boot_id"
echo "ECS_CLUSTER=$(field cluster)" > "$dir/ecs.config"
root=$dir/pkg/root
cat > "$dir/config.toml" <<CONF
# ecs-patchd confined to $dir: every path, command and endpoint is a stand-in.
[paths]
state_dir = "$dir/state"
ecs_config = "$dir/ecs.config"
boot_id = "$dir/boot_id"

[identity]
agent_url = "$(field agent_url)"

[drain]
poll_initial = "100ms"
poll_max = "500ms"
timeout = "60s"

[host]
reboot_command = ["$here/reboot.sh", "$control", "$dir/boot_id", "$root"]
agent_start_command = ["$here/agent.sh", "start", "$control", "$manager", "$root"]
agent_restart_command = ["$here/agent.sh", "restart", "$control", "$manager", "$root"]
reboot_timeout = "30s"
agent_reconnect_timeout = "30s"

[coordination]
settle = "0s"
poll = "200ms"

CONF
cat "$dir/pkg/packages.toml" >> "$dir/config.toml"

cat > "$dir/env" <<ENV
export AWS_ENDPOINT_URL=$control
export AWS_EC2_METADATA_SERVICE_ENDPOINT=$(field imds_url)
export AWS_ACCESS_KEY_ID=standin AWS_SECRET_ACCESS_KEY=standin AWS_REGION=$(field region)
export ECS_PATCHD_CONFIG=$dir/config.toml
ENV
