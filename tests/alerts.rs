//! The packaged Prometheus alerting rules (`packaging/prometheus/ecs-patchd.rules.yml`),
//! checked and unit-tested with the real `promtool` on series taken from the metrics
//! textfile the real binary wrote after real runs: each alert fires when it should, on the
//! host it should, and stays quiet otherwise.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::SystemTime;

use common::{Options, TestHost};

/// promtool, as scripts/setup.sh unpacks it (or from PATH).
fn promtool() -> PathBuf {
    let unpacked = common::repo_path(".cache/prometheus/usr/bin/promtool");
    if unpacked.exists() { unpacked } else { PathBuf::from("promtool") }
}

fn rules() -> PathBuf {
    common::repo_path("packaging/prometheus/ecs-patchd.rules.yml")
}

/// promtool's samples every 5 minutes (within its 5-minute lookback) for a little over 15
/// days, the longest `for` (14 days) and some.
const INTERVAL_MINUTES: u64 = 5;
const SAMPLES: u64 = 15 * 24 * 60 / INTERVAL_MINUTES + 100;

/// The samples of the textfile at `path` as promtool input series of host `instance`, each
/// held from time 0 on. promtool's clock starts at 0: a timestamp is moved back by `now`,
/// so that `time() - ts` at promtool's time T is the sample's age plus T.
fn input_series(instance: &str, path: &PathBuf, now: f64) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut yaml = String::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let mut value: f64 = value.parse().unwrap();
        let (name, labels) = series.split_once('{').map_or((series, "}"), |(n, l)| (n, l));
        if name.ends_with("_timestamp_seconds") {
            value -= now;
        }
        let comma = if labels == "}" { "" } else { "," };
        yaml.push_str(&format!(
            "      - series: '{name}{{instance=\"{instance}\"{comma}{labels}'\n        values: '{value}x{SAMPLES}'\n"
        ));
    }
    yaml
}

/// One `promql_expr_test` of the alerts firing at `at`: exactly `firing` (alert name and
/// its labels besides `alertstate`).
fn firing(at: &str, firing: &[&str]) -> String {
    let mut yaml =
        format!("      - expr: ALERTS{{alertstate=\"firing\"}}\n        eval_time: {at}\n        exp_samples:");
    if firing.is_empty() {
        yaml.push_str(" []\n");
    }
    for alert in firing {
        yaml.push_str(&format!(
            "\n          - labels: 'ALERTS{{alertstate=\"firing\",{alert}}}'\n            value: 1"
        ));
    }
    yaml.push('\n');
    yaml
}

#[test]
fn the_packaged_alerts_fire_on_the_daemons_own_metrics_when_they_should_and_only_then() {
    let check = Command::new(promtool()).arg("check").arg("rules").arg(rules()).output().expect("promtool runs");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout) + String::from_utf8_lossy(&check.stderr)
    );

    // A host patched and back in service: nothing, until it goes 8 days without a cycle.
    let patched = TestHost::start(Options::default());
    let patched_metrics = patched.metrics_textfile();
    patched.run_to_success("patched");

    // A host whose check meets a lease table that does not exist, with security updates pending.
    let broken = TestHost::start(Options {
        scenario: "security",
        config: "[coordination]\nbackend = \"dynamodb\"\ndynamodb_table = \"no-such-table\"\n",
        ..Options::default()
    });
    let broken_metrics = broken.metrics_textfile();
    let checked = broken.run(&["check"]);
    assert!(checked.stdout.contains("no-such-table"), "{checked:?}");

    // A host that finds the roll paused.
    let waiting = TestHost::start(Options::dynamodb_leases());
    let waiting_metrics = waiting.metrics_textfile();
    assert_eq!(waiting.run(&["fleet", "pause", "--reason", "change freeze"]).code, 0);
    assert_eq!(waiting.run(&["run"]).code, 75);

    // A host whose process died drained.
    let stuck = TestHost::start(Options::default());
    let stuck_metrics = stuck.metrics_textfile();
    let killed = stuck.run_with(&["run"], &[("ECS_PATCHD_FAULT_KILL", "draining:done")]);
    assert!(killed.stderr.contains("fault injection: killing the process"), "{killed:?}");

    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    let mut series = String::new();
    for (instance, path) in [
        ("patched", &patched_metrics),
        ("broken", &broken_metrics),
        ("waiting", &waiting_metrics),
        ("stuck", &stuck_metrics),
    ] {
        series.push_str(&input_series(instance, path, now));
    }
    let paused = "alertname=\"EcsPatchdRollPaused\",severity=\"warning\"";
    let setup = "alertname=\"EcsPatchdSetupError\",instance=\"broken\",severity=\"critical\"";
    let out =
        "alertname=\"EcsPatchdHostOutOfServiceTooLong\",instance=\"stuck\",severity=\"critical\",step=\"draining\"";
    let idle = "alertname=\"EcsPatchdNoSuccessfulCycle\",instance=\"patched\",severity=\"warning\"";
    let security = "alertname=\"EcsPatchdSecurityUpdatesPending\",instance=\"broken\",severity=\"warning\"";
    let tests = [
        firing("1m", &[]),
        firing("30m", &[paused, setup]),
        firing("3h", &[paused, setup, out]),
        firing("7d", &[paused, setup, out]),
        firing("9d", &[paused, setup, out, idle]),
        firing("15d", &[paused, setup, out, idle, security]),
    ]
    .concat();
    let file = patched.path("alerts-test.yml");
    std::fs::write(
        &file,
        format!(
            "rule_files: ['{}']\nevaluation_interval: 1m\ntests:\n  - interval: {INTERVAL_MINUTES}m\n    input_series:\n{series}    promql_expr_test:\n{tests}",
            rules().display()
        ),
    )
    .unwrap();
    let test = Command::new(promtool()).arg("test").arg("rules").arg(&file).output().unwrap();
    let said = String::from_utf8_lossy(&test.stdout) + String::from_utf8_lossy(&test.stderr);
    assert!(test.status.success(), "{said}\n{}", std::fs::read_to_string(&file).unwrap());
}
