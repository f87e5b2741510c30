#!/usr/bin/env bash
# `check`'s peak memory when whatever answers on the ECS agent's port sends an answer of
# MIB mebibytes (issue 26: a 1.5 GiB `/v1/metadata` answer took `check` to 4.6 GiB before
# the agent's answers were read up to 1 MiB). Each size is one `check` against the
# stand-ins, its peak RSS from /usr/bin/time; past the bound, the host is found through ECS.
#
# usage: scripts/bench-agent-answer.sh [MIB...]   (default: 0 1 64 256; ECS_PATCHD_BIN
#        names a built binary instead of building the release one)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
if [[ -z ${ECS_PATCHD_BIN:-} ]]; then
  cargo build --release --quiet
fi
bin=${ECS_PATCHD_BIN:-$PWD/target/release/ecs-patchd}
work=$(mktemp -d -t ecs-patchd-bench.XXXXXX)
cleanup() {
  kill "$(cat "$work/standin.pid" 2>/dev/null)" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

STANDIN_PYTHON=.venv/bin/python tests/standins/prepare-host.sh "$work" dnf none >/dev/null
# shellcheck disable=SC1091
. "$work/env"
control=$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["moto_url"])' "$work/standin.json")
printf '%-14s %-16s %s\n' "answer (MiB)" "peak RSS (MiB)" "check"
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(0 1 64 256)
for mib in "${sizes[@]}"; do
  .venv/bin/python tests/standins/standin_ctl.py "$control" agent/lie "{\"host\": 0, \"pad\": $((mib << 20))}" >/dev/null
  code=0
  /usr/bin/time -f %M -o "$work/rss" "$bin" check >"$work/out" 2>"$work/err" || code=$?
  # What became of the agent's answer, if it was not used: refused at the bound, or too slow.
  said=$(grep -o 'the ECS agent at [^;]*' "$work/err" | head -n 1 | sed 's/^the ECS agent at [^ ]* //' | cut -c1-70 || true)
  [[ -n $said ]] || said="(the answer was read)"
  printf '%-14s %-16s exit %s %s\n' "$mib" "$(( $(tail -n 1 "$work/rss") / 1024 ))" "$code" "$said"
done
