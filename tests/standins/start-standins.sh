#!/bin/sh
# Starts the AWS/IMDS/agent stand-ins (aws_standin.py) in the background and waits until
# they are up: DIR/standin.json has their addresses, DIR/standin.pid their pid.
# usage: start-standins.sh DIR [aws_standin.py options...]
# STANDIN_PYTHON names a python with moto installed (default: python3).
set -eu
dir=$(realpath -m "$1")
shift
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"
"${STANDIN_PYTHON:-python3}" "$here/aws_standin.py" --state-file "$dir/standin.json" "$@" > "$dir/standin.log" 2>&1 &
echo $! > "$dir/standin.pid"
tries=0
until [ -f "$dir/standin.json" ]; do
  tries=$((tries + 1))
  if [ $tries -gt 300 ] || ! kill -0 "$(cat "$dir/standin.pid")" 2>/dev/null; then
    echo "the stand-ins did not start; their log:" >&2; cat "$dir/standin.log" >&2; exit 1
  fi
  sleep 0.1
done
