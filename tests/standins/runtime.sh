#!/bin/sh
# Stand-in for `systemctl restart containerd docker`: records the restart in RECORD, and
# restarts the agent (its container dies with the runtime; ecs-init starts it again).
# usage: runtime.sh RECORD CONTROL_URL dnf|apt ROOT HOST_INDEX
set -eu
record=$1
shift
echo restarted >> "$record"
exec "$(dirname "$0")/agent.sh" restart "$@"
