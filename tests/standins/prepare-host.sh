#!/bin/sh
# Prepares one simulated EC2 host in DIR: the stand-ins (start-standins.sh, left running:
# their pid is in DIR/standin.pid) and the host itself (configure-host.sh).
# usage: prepare-host.sh DIR dnf|apt SCENARIO [aws_standin.py options...]
set -eu
dir=$(realpath -m "$1") manager=$2 scenario=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
"$here/start-standins.sh" "$dir" "$@"
"$here/configure-host.sh" "$dir" "$dir/standin.json" 0 "$manager" "$scenario"
