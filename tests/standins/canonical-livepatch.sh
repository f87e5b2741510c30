#!/bin/sh
# Stand-in for the Canonical Livepatch client: `status --verbose --format json` prints
# STATUS_FILE (the test writes what the client would say); without it, the client answers
# as one that is not enabled: exit 1.
# usage: canonical-livepatch.sh STATUS_FILE status --verbose --format json
set -eu
file=$1
shift
[ "$*" = "status --verbose --format json" ] || { echo "canonical-livepatch.sh: unexpected: $*" >&2; exit 2; }
[ -f "$file" ] || { echo "Machine is not enabled. Please run 'sudo canonical-livepatch enable' with the token obtained from https://ubuntu.com/livepatch." >&2; exit 1; }
cat "$file"
