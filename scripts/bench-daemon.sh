#!/usr/bin/env bash
# The idle daemon: resident memory and wake-ups per minute, and the stripped release
# binary's size (issue 8's goals: RSS <= 8 MiB, <= 1 wake-up a minute).
#
# Method: the release binary runs `ecs-patchd daemon` against the stand-ins (moto, IMDS,
# agent) and a real dnf root with no update pending, under a maintenance window that is
# open for its first checks (every 20 s) and then closes for a week. Once it has closed and
# the daemon has settled, it is idle as in production (between two checks, or outside its
# window). Over MINUTES minutes (default 10: one period of its two timers):
#   - RSS: VmRSS (and its anonymous and file parts) of /proc/PID/status, at the end;
#   - wake-ups: the voluntary context switches of all its threads, from
#     /proc/PID/task/*/status: a thread that wakes goes back to sleep with one (involuntary
#     switches, preemptions while running, are shown beside them);
#   - AWS calls: the stand-ins' ECS call counter, before and after (must not move).
# As under the unit's WatchdogSec=20min, the daemon pings a watchdog every 10 minutes (a
# notify socket read by this script stands in for systemd).
#
# usage: scripts/bench-daemon.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
scripts/setup.sh
cargo build --release --quiet
bin=$PWD/target/release/ecs-patchd
work=$(mktemp -d -t ecs-patchd-bench.XXXXXX)
daemon="" reader=""
cleanup() {
  [[ -n $daemon ]] && kill "$daemon" 2>/dev/null || true
  [[ -n $reader ]] && kill "$reader" 2>/dev/null || true
  kill "$(cat "$work/standin.pid" 2>/dev/null)" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

STANDIN_PYTHON=.venv/bin/python tests/standins/prepare-host.sh "$work" dnf none >/dev/null
# shellcheck disable=SC1091
. "$work/env"
# A two-minute window from the current minute (UTC), then a week closed.
day=$(date -u +%a | tr 'A-Z' 'a-z') start=$(date -u +%H:%M)
cat >> "$work/config.toml" <<CONF

[schedule]
check_interval = "20s"
windows = [{ days = ["$day"], start = "$start", length = "2m" }]
CONF

ctx() { # context switches of every thread of $1 of kind $2 (voluntary, nonvoluntary)
  cat /proc/"$1"/task/*/status 2>/dev/null | awk -v kind="^$2_ctxt_switches" '$1 ~ kind { n += $2 } END { print n + 0 }'
}
ecs_calls() {
  .venv/bin/python - "$work/standin.json" <<'PY'
import json, sys, urllib.request
url = json.load(open(sys.argv[1]))["moto_url"]
state = json.load(urllib.request.urlopen(urllib.request.Request(url + "/_standin/state", data=b"{}")))
print(sum(state["calls"].values()))
PY
}

.venv/bin/python -c 'import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    s.recv(4096)' "$work/notify.sock" &
reader=$!
sleep 0.5
(
  export NOTIFY_SOCKET=$work/notify.sock WATCHDOG_USEC=1200000000 WATCHDOG_PID=$BASHPID
  exec "$bin" daemon
) > "$work/daemon.log" 2>&1 &
daemon=$!
echo "daemon pid $daemon: checking inside a window open until two minutes past $start UTC" >&2
# The window closes at most 2 minutes from now; then give it 30 s to settle.
sleep 150
if ! kill -0 "$daemon" 2>/dev/null; then cat "$work/daemon.log" >&2; exit 1; fi
checks=$(grep -c "no update is pending\|nothing to do" "$work/daemon.log" || true)
before=$(ctx "$daemon" voluntary) preempted_before=$(ctx "$daemon" nonvoluntary) calls_before=$(ecs_calls)
echo "measuring the idle daemon for $minutes minute(s) (it made $checks check(s) while the window was open)" >&2
sleep $((minutes * 60))
after=$(ctx "$daemon" voluntary) preempted_after=$(ctx "$daemon" nonvoluntary) calls_after=$(ecs_calls)
status=/proc/$daemon/status
rss=$(awk '/^VmRSS/ { print $2 }' "$status") anon=$(awk '/^RssAnon/ { print $2 }' "$status") file=$(awk '/^RssFile/ { print $2 }' "$status")
threads=$(awk '/^Threads/ { print $2 }' "$status")
size=$(stat -c %s "$bin")
echo "idle RSS:            $(awk -v k="$rss" 'BEGIN { printf "%.1f MiB", k / 1024 }') (anonymous $(awk -v k="$anon" 'BEGIN { printf "%.1f", k / 1024 }') MiB, file-backed $(awk -v k="$file" 'BEGIN { printf "%.1f", k / 1024 }') MiB), $threads threads"
echo "wake-ups:            $((after - before)) in $minutes min = $(awk -v n=$((after - before)) -v m="$minutes" 'BEGIN { printf "%.2f", n / m }') per minute ($((preempted_after - preempted_before)) involuntary switches besides)"
echo "AWS calls while idle: $((calls_after - calls_before))"
echo "release binary:      $(awk -v b="$size" 'BEGIN { printf "%.1f MiB", b / 1048576 }') stripped ($size bytes)"
echo "daemon status:       $("$bin" status --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["daemon"]["activity"])')"
