#!/usr/bin/env bash
# Breaks the code on purpose, one mutation at a time, in a throwaway worktree, and runs the
# tests that must catch it: a test suite is only worth what it catches. Prints, for each
# mutation, "caught" with the failing tests, or "MISSED".
#
# usage: scripts/mutants.sh [NAME...]     (default: every mutation below)
# Needs what scripts/test.sh installs (it runs scripts/setup.sh first). Takes a few minutes
# a mutation: each one rebuilds the tests it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export ECS_PATCHD_TEST_PYTHON="$PWD/.venv/bin/python"
umask 022

# name | file | exact text | replacement | nextest filter of the tests that must fail
mutations=(
  "round-percent-up|src/coordination/policy.rs|(registered * p as usize / 100).max(1)|(registered * p as usize).div_ceil(100).max(1)|test(budgets_parse) | binary(simulation)"
  "grant-k-plus-1|src/coordination/policy.rs|Budget::Count(n) => n as usize,|Budget::Count(n) => n as usize + 1,|binary(simulation) | test(four_hosts)"
  "ignore-min-healthy|src/coordination/policy.rs|if healthy_after * 100 < policy.min_healthy_percent as usize * registered {|if false \&\& healthy_after * 100 < policy.min_healthy_percent as usize * registered {|binary(simulation)"
  "ignore-one-zone|src/coordination/policy.rs|if policy.one_az_at_a_time|if false \&\& policy.one_az_at_a_time|binary(simulation) | test(one_zone)"
  "leak-a-release|src/coordination/store/coordinator.rs|            s.holder = None;\n            // Back in service now|            // Back in service now|binary(simulation) | test(dynamodb_lease::kill_after_the_drain)"
  "count-daemon-tasks-as-load|src/coordination/policy.rs|.minus(request.stays.unwrap_or_default()).plus(still_to_move)|.plus(still_to_move)|test(daemon)"
  "drain-ends-on-desired-status|src/cycle/drain.rs|        if counted == 0 {\n            let local|        if counted == 0 { return Ok(TasksLeft::default()); }\n        if counted == 0 {\n            let local|test(nothing_is_installed_while) | test(deactivating)"
  "sigterm-cuts-the-transaction|src/packages/mod.rs|    let _transaction = shutdown::transaction().await;\n||test(sigterm_during)"
  "deregister-without-force|src/ecs.rs|.force(true)|.force(false)|test(a_lost_agent_state)"
  "claim-patched-without-reactivating|src/cycle/reactivate.rs|                        self.ports.ecs.set_active(\&arn).await?;\n||binary(simulation) | test(full_cycle_with_dnf)"
  "never-reclaim|src/coordination/store/slots.rs|                StalePolicy::Pause => None,|                StalePolicy::Pause \| StalePolicy::Reclaim => None,|binary(simulation)"
  "reactivate-a-leaving-host|src/cycle/reactivate.rs|.await.filter(\|l\| l.for_good);|.await.filter(\|_\| false);|test(a_host_leaving_during_the_drain)"
  "drain-for-nothing|src/plan.rs|Class::Reboot \| Class::Runtime => true,|Class::Reboot \| Class::Runtime => false,|binary(simulation) | test(a_container_runtime_update)"
  "rule-ignores-packages|src/packages/reboot.rs|updated.iter().find_map(|updated.iter().take(0).find_map(|test(without_a_reboot_probe)"
  "security-flag-dropped|src/packages/rpm.rs|        if self.security_only {\n            argv.push|        if false {\n            argv.push|test(security_only)"
  "install-from-the-locked-release|src/plan.rs|Target { release: self.release().map(str::to_string),|Target { release: None,|test(amazon_linux_2023_releases)"
)

wanted=("$@")
root=$PWD
work=$(mktemp -d -t ecs-patchd-mutants.XXXXXX)
trap 'git -C "$root" worktree remove --force "$work/tree" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/tree" HEAD >/dev/null 2>&1
ln -s "$root/.venv" "$work/tree/.venv"
export CARGO_TARGET_DIR="$root/target/mutants"

for entry in "${mutations[@]}"; do
  IFS='|' read -r name file text replacement filter <<<"${entry//\\|/$'\x1f'}"
  text=${text//$'\x1f'/|} replacement=${replacement//$'\x1f'/|}
  if ((${#wanted[@]})) && [[ ! " ${wanted[*]} " == *" $name "* ]]; then
    continue
  fi
  git -C "$work/tree" checkout --quiet -- .
  if ! python3 - "$work/tree/$file" "$text" "$replacement" <<'PY'
import sys
path, old, new = sys.argv[1], sys.argv[2].replace("\\n", "\n").replace("\\&", "&"), sys.argv[3].replace("\\n", "\n").replace("\\&", "&")
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"the text to mutate is not in {path} exactly once: {old!r}")
open(path, "w").write(text.replace(old, new))
PY
  then
    echo "STALE   $name: the code changed, update this mutation"
    continue
  fi
  log="$work/$name.log"
  if (cd "$work/tree" && cargo nextest run --no-fail-fast -E "$filter" >"$log" 2>&1); then
    echo "MISSED  $name (tests: $filter)"
  elif grep -q "error\[E" "$log"; then
    echo "BUILD   $name does not compile: $(grep -m1 'error\[E' "$log")"
  else
    failed=$(grep -E '^\s+FAIL ' "$log" | sed -E 's/.*ecs-patchd(::[a-z_]+)? //' | sort -u | tr '\n' ' ')
    echo "caught  $name by: $failed"
  fi
done
