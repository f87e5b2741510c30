#!/bin/sh
# Stand-in for `systemctl restart containerd docker`: records the restart in RECORD, and
# restarts the agent, as systemd does: ecs-init's ecs.service is `PartOf=docker.service`
# ("when systemd stops or restarts the units listed here, the action is propagated").
# usage: runtime.sh RECORD CONTROL_URL dnf|apt ROOT HOST_INDEX
set -eu
record=$1
shift
echo restarted >> "$record"
exec "$(dirname "$0")/agent.sh" restart "$@"
