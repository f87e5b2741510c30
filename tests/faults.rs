//! Faults an operator of a large fleet meets, against the real binary, moto, the stand-in
//! IMDS and agent, and real dnf: a journal lost or copied from another instance, a reboot
//! that never happens, an unreadable boot id, a `run` holding the journal beside the
//! daemon, a corrupt journal under the daemon, an IMDS that fails its answers. Each ends
//! with an outcome: the host ACTIVE and patched, or ACTIVE with one failure reported.

mod common;

use std::time::{Duration, Instant};

use common::{Options, TestHost, assert_one_slot_released, assert_patched, day_of_week, libfaketime, repo_path};
use serde_json::{Value, json};

/// Runs until the fault point `point` kills the process.
fn kill_at(host: &TestHost, point: &str) {
    let run = host.run_with(&["run"], &[("ECS_PATCHD_FAULT_KILL", point)]);
    assert!(run.stderr.contains("fault injection: killing the process"), "{point} not reached: {run:?}");
}

fn set_journal_aside(host: &TestHost) {
    std::fs::rename(host.journal_file(), host.path("state/cycle.json.moved-aside")).unwrap();
}

/// Waits (up to `within`) until `name.stderr` of the host's folder contains `text`.
fn wait_for_log(host: &TestHost, name: &str, text: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let log = std::fs::read_to_string(host.path(&format!("{name}.stderr"))).unwrap_or_default();
        if log.contains(text) {
            return log;
        }
        assert!(Instant::now() < deadline, "{name} never said {text:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, as systemd stops the service; returns the exit code and the log.
fn stop(host: &TestHost, mut child: std::process::Child, name: &str) -> (Option<i32>, String) {
    let pid = child.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{name} did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), std::fs::read_to_string(host.path(&format!("{name}.stderr"))).unwrap())
}

/// The state directory, made as the daemon makes it (0700), for a test to put files in.
fn state_dir(host: &TestHost) -> std::path::PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let dir = host.path("state");
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).unwrap();
    dir
}

#[test]
fn a_journal_moved_aside_after_the_reboot_is_finished_from_the_drain_mark() {
    let host = TestHost::start(Options::dynamodb_leases());
    let first = host.run(&["run"]);
    assert!(first.rebooted(), "{first:?}");
    assert_eq!(host.record()["status"], "DRAINING");
    set_journal_aside(&host);

    let check = host.check_json();
    let verdict = check["verdict"].as_str().unwrap();
    assert!(verdict.starts_with("take up cycle "), "{verdict}");

    let runs = host.run_to_success("journal moved aside after the reboot");
    let last = runs.last().unwrap();
    assert!(last.stdout.contains("taken up again; its slot is still held and nothing is pending"), "{}", last.stdout);
    let record = host.record();
    assert_eq!(record["status"], "ACTIVE", "{record}");
    assert_eq!(record["attributes"], json!({}), "the mark is removed");
    assert_eq!(host.reboots(), 1, "no second reboot");
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 1, "no second drain");
    for package in ["demo-app", "demo-kernel", host.agent_package()] {
        assert_eq!(host.upgrades(package), 1, "{package} upgraded exactly once");
    }
    assert_one_slot_released(&host, "");
}

#[test]
fn a_daemon_started_outside_its_window_finishes_the_drain_its_lost_journal_left() {
    let host = TestHost::start(Options::dynamodb_leases());
    assert!(host.run(&["run"]).rebooted());
    set_journal_aside(&host);
    // Its only window opens in two days: before, the drain waited for it.
    let later = humantime::format_rfc3339(std::time::SystemTime::now() + Duration::from_secs(2 * 24 * 3600));
    let weekday = day_of_week(&later.to_string()[..10]);
    host.merge_config(&format!(
        "[schedule]\ncheck_interval = \"1s\"\ntime_zone = \"UTC\"\n\
         windows = [{{ days = [\"{weekday}\"], start = \"03:00\", length = \"1m\" }}]\n"
    ));
    let daemon = host.spawn(&["daemon"], &[], "daemon");
    wait_for_log(&host, "daemon", "taken up again", Duration::from_secs(60));
    wait_for_log(&host, "daemon", "done: ", Duration::from_secs(60));
    let (code, log) = stop(&host, daemon, "daemon");
    assert_eq!(code, Some(0), "{log}");
    let record = host.record();
    assert_eq!(record["status"], "ACTIVE", "{record}");
    assert_eq!(record["attributes"], json!({}), "the mark is removed");
    assert_eq!(host.reboots(), 1, "no second reboot");
    assert_one_slot_released(&host, "");
}

#[test]
fn a_journal_moved_aside_before_the_install_is_finished_from_the_drain_mark() {
    let host = TestHost::start(Options::dynamodb_leases());
    kill_at(&host, "draining:done");
    set_journal_aside(&host);
    let runs = host.run_to_success("journal moved aside after the drain");
    assert!(
        runs[0].stderr.contains("taken up again; its slot is still held: 3 update(s) pending: demo-app, demo-kernel"),
        "{}",
        runs[0].stderr
    );
    assert_patched(&host);
    assert!(host.status()["cycle"]["taken_up"].is_string(), "the journal says how the cycle came back");
    assert_one_slot_released(&host, "");
}

#[test]
fn a_journal_lost_mid_drain_is_taken_up_at_the_drain() {
    // Each stopped task spends 5 s in DEACTIVATING and STOPPING: the drain is under way.
    let host = TestHost::start(Options {
        standin_args: &["--lease-table", "leases", "--deactivating-seconds", "5"],
        ..Options::dynamodb_leases()
    });
    let arn = host.record()["arn"].clone();
    let mut run = host.spawn_run();
    // Killed once the instance is DRAINING under the cycle's mark, its tasks still stopping.
    let deadline = Instant::now() + Duration::from_secs(60);
    while host.record()["status"] != "DRAINING" {
        assert!(Instant::now() < deadline, "never drained: {}", host.record());
        std::thread::sleep(Duration::from_millis(50));
    }
    run.kill().unwrap();
    run.wait().unwrap();
    set_journal_aside(&host);
    host.run_to_success("journal lost mid-drain");
    assert_patched(&host);
    // The taken-up cycle waited for the drain: nothing was installed under a running task.
    let installing = host.step_began("installing");
    for task in host.ecs()["tasks"].as_array().unwrap().iter().filter(|t| t["container_instance_arn"] == arn) {
        let stopped = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs_f64(task["stopped_at"].as_f64().unwrap());
        assert!(stopped <= installing, "installed before {} stopped", task["arn"]);
    }
    assert_one_slot_released(&host, "");
}

#[test]
fn a_journal_of_another_instance_is_never_resumed() {
    // A state directory baked into an image (or a cloned volume) mid-cycle, here at the
    // install: resumed, it would install and return under the other host's cycle (and, at
    // the reboot, take this host's boot id for proof that the other one rebooted).
    let host = TestHost::start(Options::dynamodb_leases());
    kill_at(&host, "installing:persisted");
    let mut cycle: Value = serde_json::from_str(&std::fs::read_to_string(host.journal_file()).unwrap()).unwrap();
    let other = "i-0fffffffffffffff0";
    cycle["instance_id"] = json!(other);
    cycle["id"] = json!(format!("{other}-20261206T000000Z"));
    std::fs::write(host.journal_file(), serde_json::to_vec(&cycle).unwrap()).unwrap();

    let runs = host.run_to_success("a journal of another instance");
    assert!(
        runs[0].stderr.contains("holds cycle i-0fffffffffffffff0-20261206T000000Z of another EC2 instance"),
        "{}",
        runs[0].stderr
    );
    let aside: Vec<String> = std::fs::read_dir(host.path("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cycle.json.from-another-instance-"))
        .collect();
    assert_eq!(aside.len(), 1, "kept for an operator: {aside:?}");
    // This host's own drain was finished: rebooted for real, once.
    assert_patched(&host);
    assert_one_slot_released(&host, "");
}

#[test]
fn a_reboot_that_never_happens_is_counted_and_the_host_returns_to_service() {
    let host = TestHost::start(Options::dynamodb_leases());
    let requests = host.path("reboot-requests");
    let cancelled = repo_path("tests/standins/reboot-cancelled.sh");
    host.merge_config(&format!(
        "[host]\nreboot_command = [\"{}\", \"{}\"]\nreboot_attempts = 2\n",
        cancelled.display(),
        requests.display()
    ));
    // Each request stops the run (SIGTERM, as systemd at a shutdown) and the host stays up.
    let runs = host.run_to_end();
    let last = runs.last().unwrap();
    assert_eq!(runs.len(), 3, "two requests, then the end: {runs:#?}");
    assert_ne!(last.code, 0, "{last:?}");
    assert_eq!(
        std::fs::read_to_string(&requests).unwrap().lines().count(),
        2,
        "host.reboot_attempts bounds the requests"
    );
    assert!(last.stdout.contains("failed at rebooting: the host did not reboot after 2 request(s)"), "{}", last.stdout);
    let record = host.record();
    assert_eq!(record["status"], "ACTIVE", "back in service: {record}");
    assert_eq!(record["attributes"], json!({}));
    // One failure, one pause of the roll.
    let item = &host.control("lease", "{}")["demo/default"];
    assert_eq!(item["holders"], json!([]), "{item}");
    assert!(item["paused"]["reason"].as_str().unwrap().contains("did not reboot"), "{item}");
}

#[test]
fn an_unreadable_boot_id_stops_the_cycle_before_the_drain() {
    let host = TestHost::start(Options::default());
    host.merge_config("[paths]\nboot_id = \"/nonexistent/boot_id\"\n");
    let run = host.run(&["run"]);
    assert_eq!(run.code, 78, "a setup error: {run:?}");
    assert!(run.stderr.contains("key `paths.boot_id`"), "{}", run.stderr);
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0);
    assert_eq!(host.installed("demo-app"), "1.0");
    assert_eq!(host.record()["status"], "ACTIVE");
}

#[test]
fn a_daemon_beside_a_run_that_holds_the_journal_waits_quietly() {
    let host = TestHost::start(Options::default());
    host.merge_config("[schedule]\ncheck_interval = \"1s\"\n");
    // Another process holds the lock and has not written its pid (yet).
    let lock = state_dir(&host).join("lock");
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sleep", "15"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let daemon = host.spawn(&["daemon"], &[], "daemon");
    wait_for_log(&host, "daemon", "not ours to drive", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(4));
    let (code, log) = stop(&host, daemon, "daemon");
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(log.matches("not ours to drive").count(), 1, "said once, not in a loop:\n{log}");
    assert!(log.contains("another ecs-patchd is running a cycle"), "{log}");
    assert!(!log.contains("(pid )"), "{log}");
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0);
}

#[test]
fn a_corrupt_journal_is_reported_when_the_daemon_starts() {
    let host = TestHost::start(Options::default());
    host.merge_config("[schedule]\ncheck_interval = \"1h\"\n");
    std::fs::write(state_dir(&host).join("cycle.json"), "{\"id\": \"i-0abc-2026").unwrap();
    let daemon = host.spawn(&["daemon"], &[], "daemon");
    let log = wait_for_log(&host, "daemon", "is corrupt", Duration::from_secs(20));
    assert!(log.contains("Move the file aside: the next run takes up a drain of this host's"), "{log}");
    let (code, _) = stop(&host, daemon, "daemon");
    assert_eq!(code, Some(0));
    assert_eq!(std::fs::read_to_string(host.journal_file()).unwrap(), "{\"id\": \"i-0abc-2026", "left untouched");
}

#[test]
fn an_imds_that_fails_its_answers_is_one_readable_line() {
    let host = TestHost::start(Options::default());
    host.control("imds", "{\"host\": 0, \"fail_get\": 500}");
    let run = host.run(&["check"]);
    assert_eq!(run.code, 1, "{run:?}");
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("cannot read the instance identity"))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    assert!(line.contains("IMDS answered HTTP 500: the metadata service failed"), "{line}");
    for dump in ["headers", "Response {", "SdkBody", "X-Standin-Trace", "internal failure"] {
        assert!(!run.stderr.contains(dump), "no dump of the response ({dump}): {}", run.stderr);
    }
}

#[test]
fn aws_5xx_answers_and_an_expired_token_are_tried_again_without_a_pause() {
    let host = TestHost::start(Options::dynamodb_leases());
    // Three 500s in a row: every one of the SDK's own three attempts at the drain fails.
    host.control(
        "inject",
        r#"{"operation": "UpdateContainerInstancesState:DRAINING", "code": "InternalFailure", "status": 500, "times": 3}"#,
    );
    // Instance profile credentials rotated under a call.
    host.control("inject", r#"{"operation": "ListTasks", "code": "ExpiredTokenException", "status": 403, "times": 1}"#);
    let runs = host.run_to_success("5xx and an expired token");
    let said: String = runs.iter().map(|r| r.stderr.as_str()).collect();
    assert!(said.contains("InternalFailure") && said.contains("trying again in"), "{said}");
    assert!(said.contains("the AWS credentials expired (ExpiredTokenException"), "{said}");
    assert!(said.contains("the credentials may have just rotated: trying again in"), "{said}");
    assert!(!said.contains("Attach an instance profile"), "not blamed on the setup: {said}");
    // Patched (assert_patched but for the drain's count: three refused calls, then one).
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 4);
    assert_eq!(host.record()["status"], "ACTIVE");
    assert_eq!(host.installed("demo-kernel"), "2.0");
    assert_eq!(host.reboots(), 1);
    assert_eq!(host.status()["cycle"]["state"]["outcome"]["result"], "patched");
    assert_one_slot_released(&host, "");
}

#[test]
fn a_wall_clock_jump_during_the_drain_neither_ends_nor_stretches_it() {
    // The tasks linger six seconds in DEACTIVATING: the drain is under way for a while.
    let host = TestHost::start(Options { standin_args: &["--deactivating-seconds", "6"], ..Options::default() });
    let offset = host.path("clock-offset");
    std::fs::write(&offset, "+0\n").unwrap();
    let (preload, offset_file) = (libfaketime(), offset.display().to_string());
    // The run's wall clock follows the file; its monotonic clock is the system's.
    let env = [
        ("LD_PRELOAD", preload.as_str()),
        ("FAKETIME_TIMESTAMP_FILE", offset_file.as_str()),
        ("FAKETIME_NO_CACHE", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let mut run = host.spawn(&["run"], &env, "run");
    host.wait_for_step("draining");
    // NTP steps the clock an hour ahead (drain.timeout is a minute).
    std::fs::write(&offset, "+1h\n").unwrap();
    let status = run.wait().unwrap();
    let stderr = std::fs::read_to_string(host.path("run.stderr")).unwrap();
    assert!(stderr.contains("stopped by SIGTERM"), "the run went on to its reboot: {status:?} {stderr}");
    assert!(!stderr.contains("did not finish within"), "{stderr}");
    host.run_to_success("after the jump");
    assert_patched(&host);
}
