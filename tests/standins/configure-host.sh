#!/bin/sh
# Prepares simulated host number INDEX of running stand-ins in DIR for a real ecs-patchd
# run: a throwaway package root (make-root.sh), a boot id file, an ecs.config, the daemon's
# DIR/config.toml and DIR/env (the variables that point the daemon at the stand-ins).
# usage: configure-host.sh DIR STANDIN_JSON INDEX dnf|apt SCENARIO
set -eu
dir=$(realpath -m "$1") state=$2 index=$3 manager=$4 scenario=$5
here=$(cd "$(dirname "$0")" && pwd)
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); h=d['hosts'][int(sys.argv[3])]; print(h.get(sys.argv[2], d.get(sys.argv[2])))" "$state" "$1" "$index"; }
control=$(field moto_url)

"$here/make-root.sh" "$manager" "$dir/pkg" "$scenario"
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
reboot_command = ["$here/reboot.sh", "$control", "$dir/boot_id", "$root", "$index"]
agent_start_command = ["$here/agent.sh", "start", "$control", "$manager", "$root", "$index"]
agent_restart_command = ["$here/agent.sh", "restart", "$control", "$manager", "$root", "$index"]
runtime_restart_command = ["$here/runtime.sh", "$dir/runtime.restarts", "$control", "$manager", "$root", "$index"]
reboot_timeout = "30s"
agent_reconnect_timeout = "30s"

[coordination]
# A test host is a host the test schedules itself (the packaged default is report-only).
backend = "none"
settle = "0s"
poll = "200ms"

[hooks]
dir = "$dir/hooks.d"

CONF
cat "$dir/pkg/packages.toml" >> "$dir/config.toml"
# ecs-patchd refuses a configuration others may write.
chmod 644 "$dir/config.toml"

cat > "$dir/env" <<ENV
export AWS_ENDPOINT_URL=$control
export AWS_EC2_METADATA_SERVICE_ENDPOINT=$(field imds_url)
export AWS_ACCESS_KEY_ID=standin AWS_SECRET_ACCESS_KEY=standin AWS_REGION=$(field region)
export ECS_PATCHD_CONFIG=$dir/config.toml
ENV
