//! What real AWS and real hosts do that moto alone does not show: tasks that linger after
//! they are stopped, SIGTERM during a package transaction, hosts that are leaving, Auto
//! Scaling, disconnected peers, services that cannot move, agents in the wrong cluster,
//! credentials that are missing or expired. Each test runs the real binary against the
//! stand-ins, which behave here as the AWS documentation says (tests/standins/).

mod common;

use std::time::{Duration, SystemTime};

use common::{Options, TestHost, assert_patched};

#[test]
fn nothing_is_installed_while_a_stopped_task_is_still_shutting_down() {
    // Each stopped task spends 3 s in DEACTIVATING and STOPPING, its desired status STOPPED
    // (so the instance's counts say 0) all that time.
    let host = TestHost::start(Options { standin_args: &["--deactivating-seconds", "3"], ..Options::default() });
    let draining = host.record()["arn"].clone();
    host.run_to_success("");
    assert_patched(&host);
    let installing = host.step_began("installing");
    let ours: Vec<serde_json::Value> = host.ecs()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["container_instance_arn"] == draining)
        .cloned()
        .collect();
    assert_eq!(ours.len(), 3, "the host's three service tasks: {ours:#?}");
    for task in ours {
        assert_eq!(task["last_status"], "STOPPED", "{task}");
        let stopped = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(task["stopped_at"].as_f64().unwrap());
        assert!(stopped <= installing, "the install began before {} stopped", task["arn"]);
    }
}

#[test]
fn sigterm_during_a_package_transaction_lets_it_finish_then_the_next_run_resumes() {
    for manager in ["dnf", "apt"] {
        let host = TestHost::start(Options { manager, scenario: "slow", ..Options::default() });
        let mut run = host.spawn_run();
        host.wait_for_step("installing");
        host.wait_for_scriptlet();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = run.wait().unwrap();
        let stderr = std::fs::read_to_string(host.path("run.stderr")).unwrap();
        assert_eq!(status.code(), Some(75), "{manager}: {stderr}");
        assert!(stderr.contains("letting the package transaction in progress finish"), "{manager}: {stderr}");
        assert!(stderr.contains("stopped by SIGTERM"), "{manager}: {stderr}");
        assert_eq!(host.installed("demo-app"), "2.0", "{manager}: the transaction ran to its end");
        assert_eq!(host.status()["step"], "installing", "{manager}: the journal still says installing");
        assert_eq!(host.reboots(), 0, "{manager}: no reboot after the stop");
        host.run_to_success(manager);
        assert_patched(&host);
    }
}

#[test]
fn a_run_killed_mid_transaction_is_resumed_by_installing_again_after_the_lock() {
    for manager in ["dnf", "apt"] {
        let host = TestHost::start(Options { manager, scenario: "slow", ..Options::dynamodb_leases() });
        let mut run = host.spawn_run();
        host.wait_for_step("installing");
        host.wait_for_scriptlet();
        run.kill().unwrap(); // SIGKILL: the daemon dies, the package manager goes on holding its lock
        run.wait().unwrap();
        // At once, while the orphaned transaction still runs: this run installs again, waits
        // for the lock, verifies and carries on.
        let runs = host.run_to_end();
        assert!(runs.first().unwrap().rebooted(), "{manager}: the resumed run reboots: {runs:#?}");
        assert_eq!(runs.last().unwrap().code, 0, "{manager}: {runs:#?}");
        assert_patched(&host);
        let lease = &host.control("lease", "{}")["demo/default"];
        assert_eq!(lease["holders"], serde_json::json!([]), "{manager}: {lease}");
        assert_eq!(lease["control"]["next_token"], 2, "{manager}: one grant, kept across the kill: {lease}");
    }
}

#[test]
fn a_host_that_is_leaving_starts_no_cycle() {
    for notice in
        [r#"{"lifecycle": "Terminated"}"#, r#"{"spot": {"action": "terminate", "time": "2026-11-27T10:00:00Z"}}"#]
    {
        let host = TestHost::start(Options::default());
        host.control("imds", notice);
        let check = host.run(&["check", "--json"]);
        let preview: serde_json::Value = serde_json::from_str(&check.stdout).unwrap();
        assert!(preview["verdict"].as_str().unwrap().starts_with("nothing: the instance is leaving"), "{preview}");
        let run = host.run(&["run"]);
        assert_eq!(run.code, 75, "{notice}: {run:?}");
        assert!(run.stderr.contains("the instance is leaving"), "{notice}: {}", run.stderr);
        assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING") + host.calls("PutAttributes"), 0);
        assert_eq!(host.installed("demo-app"), "1.0");
        assert!(!host.journal_file().exists(), "no cycle was recorded");
    }
}

/// Waits until ECS shows the host's instance DRAINING.
fn wait_until_draining(host: &TestHost) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while host.record()["status"] != "DRAINING" {
        assert!(std::time::Instant::now() < deadline, "never drained");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_host_leaving_during_the_drain_gives_the_slot_back_and_comes_back_active_unless_terminated() {
    for (notice, terminated) in [
        (r#"{"spot": {"action": "terminate", "time": "2026-11-27T10:00:00Z"}}"#, true),
        (r#"{"lifecycle": "Terminated"}"#, true),
        (r#"{"lifecycle": "Standby"}"#, false),
        (r#"{"spot": {"action": "stop", "time": "2026-11-27T10:00:00Z"}}"#, false),
    ] {
        let host = TestHost::start(Options {
            standalone_tasks: 1, // keeps the drain waiting
            standin_args: &["--lease-table", "leases", "--asg", "web-asg"],
            config: "[coordination]\nbackend = \"dynamodb\"\ndynamodb_table = \"leases\"\nsettle = \"1h\"\n",
            ..Options::default()
        });
        let mut run = host.spawn_run();
        wait_until_draining(&host);
        host.control("imds", notice);
        let status = run.wait().unwrap();
        let stdout = std::fs::read_to_string(host.path("run.stdout")).unwrap();
        assert_eq!(status.code(), Some(75), "{notice}: {stdout}");
        assert!(stdout.contains("the instance is leaving"), "{notice}: {stdout}");
        let expected = if terminated { "DRAINING" } else { "ACTIVE" };
        assert_eq!(host.record()["status"], expected, "{notice}: set ACTIVE unless it is terminated");
        assert_eq!(host.installed("demo-app"), "1.0", "{notice}");
        let lease = &host.control("lease", "{}")["demo/default"];
        assert_eq!(lease["holders"], serde_json::json!([]), "{notice}: the slot was given back at once: {lease}");
        assert!(lease["paused"].is_null(), "{notice}: a leaving host does not pause the roll: {lease}");
        assert_eq!(host.status()["cycle"]["state"]["outcome"]["kind"], "deferred", "{notice}");
        let id = host.standin["instance_id"].as_str().unwrap();
        assert_eq!(host.control("autoscaling", "{}")[id]["protected"], false, "{notice}: protection restored");
    }
}

#[test]
fn scale_in_protection_is_held_through_the_cycle_then_restored() {
    let host = TestHost::start(Options { standin_args: &["--asg", "web-asg"], ..Options::default() });
    let id = host.standin["instance_id"].as_str().unwrap().to_string();
    let mut first = host.spawn_run();
    wait_until_draining(&host);
    assert_eq!(host.control("autoscaling", "{}")[&id]["protected"], true, "protected while drained");
    first.wait().unwrap();
    host.run_to_success("");
    assert_patched(&host);
    assert_eq!(host.calls("SetInstanceProtection:true"), 1, "protected before the drain");
    assert_eq!(host.calls("SetInstanceProtection:false"), 1, "protection lifted at the end");
    assert_eq!(host.control("autoscaling", "{}")[&id]["protected"], false);

    // Protected before: left as it was.
    let host =
        TestHost::start(Options { standin_args: &["--asg", "web-asg", "--asg-protected"], ..Options::default() });
    let set_up = host.calls("SetInstanceProtection:true"); // by the stand-in, before the run
    assert_eq!(host.run_to_end().last().unwrap().code, 0);
    assert_eq!(host.calls("SetInstanceProtection:true") + host.calls("SetInstanceProtection:false"), set_up);
    let id = host.standin["instance_id"].as_str().unwrap();
    assert_eq!(host.control("autoscaling", "{}")[id]["protected"], true);
}

#[test]
fn the_lease_is_renewed_before_the_reboot_to_outlast_it() {
    let host = TestHost::start(Options {
        standin_args: &["--lease-table", "leases"],
        config: "[coordination]\nbackend = \"dynamodb\"\ndynamodb_table = \"leases\"\nlease_ttl = \"2m\"\n\
                 [host]\nreboot_timeout = \"30s\"\n",
        ..Options::default()
    });
    let first = host.run(&["run"]);
    assert!(first.rebooted(), "stopped by its reboot: {first:?}");
    let lease = host.control("lease", "{}");
    let holder = &lease["demo/default"]["holders"][0];
    let held = holder["expires_at"].as_u64().unwrap() - holder["renewed_at"].as_u64().unwrap();
    // reboot_timeout (30 s) plus a lease lifetime (2 m), less the moment a heartbeat may have
    // renewed since; a plain renewal holds 2 m at most.
    assert!(held >= 140_000, "held {held} ms: reboot_timeout plus a lease lifetime");
    assert_eq!(holder["step"], "rebooting");
    host.run_to_success("");
    assert_eq!(host.control("lease", "{}")["demo/default"]["holders"], serde_json::json!([]));
}

#[test]
fn resume_only_finishes_a_cycle_in_progress_and_otherwise_does_nothing() {
    let host = TestHost::start(Options::default());
    let idle = host.run(&["run", "--resume-only"]);
    assert_eq!(idle.code, 0, "{idle:?}");
    assert!(idle.stderr.contains("nothing to resume"), "{}", idle.stderr);
    assert_eq!(host.calls("DescribeContainerInstances") + host.calls("ListTasks"), 0, "no AWS call");
    assert!(!host.journal_file().exists());
    assert!(host.run(&["run"]).rebooted(), "the reboot");
    let resumed = host.run(&["run", "--resume-only"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_patched(&host);
}

#[test]
fn an_active_peer_whose_agent_is_disconnected_does_not_stall_the_roll() {
    let host = TestHost::start(Options { standin_args: &["--peers", "2"], ..Options::default() });
    host.control("peer/disconnect", r#"{"peer": 0}"#); // its EC2 instance is stopped
    let runs = host.run_to_end();
    assert_eq!(runs.last().unwrap().code, 0, "max_unavailable = 1 still lets this host go: {runs:#?}");
    assert_patched(&host);
}

#[test]
fn the_capacity_guard_keeps_a_host_that_its_peer_cannot_absorb() {
    // The one peer has room for 2 of the host's 3 service tasks: no drain.
    let host = TestHost::start(Options {
        standin_args: &["--peer-capacity", "2"],
        config: "[coordination]\nwait_timeout = \"2s\"\n",
        ..Options::default()
    });
    let run = host.run(&["run"]);
    assert_eq!(run.code, 75, "not now, not failed: {run:?}");
    assert!(run.stdout.contains("no slot within 2s (capacity: the in-service peers have 256"), "{}", run.stdout);
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0);
    assert_eq!(host.record()["status"], "ACTIVE");
    // Room for all 3: drained, and the scheduler placed every task.
    let host = TestHost::start(Options { standin_args: &["--peer-capacity", "3"], ..Options::default() });
    assert_eq!(host.run_to_end().last().unwrap().code, 0);
    assert_patched(&host);
    assert_eq!(host.ecs()["unplaceable"], 0);
}

#[test]
fn a_service_that_cannot_move_its_tasks_defers_the_cycle_before_any_drain() {
    let host = TestHost::start(Options { standin_args: &["--stuck-service"], ..Options::default() });
    let run = host.run(&["run"]);
    assert_eq!(run.code, 75, "{run:?}");
    assert!(
        run.stdout.contains("service stuck has minimumHealthyPercent 100 and maximumPercent 100"),
        "{}",
        run.stdout
    );
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING") + host.calls("PutAttributes"), 0);
    assert_eq!(host.installed("demo-app"), "1.0");
    assert_eq!(host.record()["status"], "ACTIVE");
    assert_eq!(host.status()["cycle"]["state"]["outcome"]["kind"], "deferred");
}

#[test]
fn an_agent_back_in_another_cluster_is_an_error_naming_both() {
    let host = TestHost::start(Options { config: "[host]\nagent_reconnect_timeout = \"10m\"\n", ..Options::default() });
    assert!(host.run(&["run"]).rebooted(), "the reboot");
    host.control("agent/cluster", r#"{"host": 0, "cluster": "elsewhere"}"#);
    let run = host.run(&["run"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("registered in cluster \"elsewhere\""), "{}", run.stdout);
    assert!(run.stdout.contains("in cluster \"demo\""), "{}", run.stdout);
    let outcome = &host.status()["cycle"]["state"]["outcome"];
    assert_eq!(outcome["kind"], "identity", "at once, not after agent_reconnect_timeout: {outcome}");
}

#[test]
fn missing_credentials_fail_at_once_naming_the_chain() {
    let host = TestHost::start(Options::default());
    let env: Vec<(String, String)> = host
        .env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS_KEY") && !k.starts_with("AWS_SECRET"))
        .collect();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ecs-patchd"));
    command
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", host.path("home"))
        .env("AWS_SHARED_CREDENTIALS_FILE", host.path("no-credentials"))
        .env("AWS_CONFIG_FILE", host.path("no-config"))
        .envs(env);
    let run = common::Run::from(command.output().unwrap());
    assert_eq!(run.code, 1, "not temporary: {run:?}");
    for part in ["no valid AWS credentials", "AWS_ACCESS_KEY_ID", "instance profile"] {
        assert!(run.stderr.contains(part), "mentions {part:?}: {}", run.stderr);
    }
    for call in ["DescribeContainerInstances", "ListContainerInstances", "ListTasks"] {
        assert_eq!(host.calls(call), 0, "{call}: no ECS call was tried");
    }
}

#[test]
fn credentials_that_stay_expired_fail_after_one_more_try() {
    let host = TestHost::start(Options::default());
    // The first ECS call of the cycle: describing the host's tasks for the services check.
    host.control("inject", r#"{"operation": "DescribeTasks", "code": "ExpiredTokenException", "times": 100}"#);
    let run = host.run(&["run"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("the AWS credentials expired (ExpiredTokenException"), "{}", run.stdout);
    // Once more (they may have just rotated), not retried as if ECS were throttling.
    assert_eq!(host.calls("DescribeTasks"), 2);
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0);
}

#[test]
fn credentials_that_stay_expired_during_the_drain_end_the_run() {
    // The drain asks ECS once the host's own agent runs no task: the service tasks move away.
    let host = TestHost::start(Options::default());
    let mut run = host.spawn_run();
    wait_until_draining(&host);
    host.control(
        "inject",
        r#"{"operation": "DescribeContainerInstances", "code": "ExpiredTokenException", "times": 1000}"#,
    );
    let status = run.wait().unwrap();
    let stdout = std::fs::read_to_string(host.path("run.stdout")).unwrap();
    let stderr = std::fs::read_to_string(host.path("run.stderr")).unwrap();
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("the AWS credentials expired (ExpiredTokenException"), "{stderr}");
    // The drain's poll gave up at its second refused call (one more try: they may have just
    // rotated), and setting ACTIVE again (which reads the instance first) at its own second:
    // four calls, not drain.timeout's worth of polls.
    let left = host.ecs()["injections_left"]["DescribeContainerInstances"].as_u64().unwrap();
    assert_eq!(1000 - left, 4, "{stderr}");
    assert_eq!(host.status()["step"], "reactivating", "the next run, with credentials, sets it ACTIVE");
}

#[test]
fn throttling_and_server_errors_are_ridden_out() {
    // Three of each: the SDK's standard retry mode makes three attempts itself, so only
    // the third failure in a row reaches ecs-patchd's own retry of the step.
    let host = TestHost::start(Options::default());
    // PutAttributes: the mark set at the drain's start, a step that fails and is retried.
    host.control("inject", r#"{"operation": "PutAttributes", "code": "ThrottlingException", "times": 3}"#);
    host.control(
        "inject",
        r#"{"operation": "DescribeContainerInstances", "code": "ServerException", "status": 500, "times": 3}"#,
    );
    let runs = host.run_to_success("");
    assert_patched(&host);
    let log: String = runs.iter().map(|r| r.stderr.as_str()).collect();
    for code in ["ThrottlingException", "ServerException"] {
        assert!(log.contains(code) && log.contains("trying again in"), "{code} reached the step's retry: {log}");
    }
}

/// Runs a host whose stand-in has `blocked` and expects the capacity guard to keep it
/// ACTIVE, naming `reason`; then runs one with `free` and expects it patched with every
/// moved task placed.
fn deferred_then_patched(blocked: &[&str], reason: &str, free: &[&str]) {
    let host = TestHost::start(Options {
        standin_args: blocked,
        config: "[coordination]\nwait_timeout = \"2s\"\n",
        ..Options::default()
    });
    let run = host.run(&["run"]);
    assert_eq!(run.code, 75, "not now, not failed: {run:?}");
    assert!(run.stdout.contains(reason), "{reason:?} in {}", run.stdout);
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0);
    assert_eq!(host.record()["status"], "ACTIVE");
    let host = TestHost::start(Options { standin_args: free, ..Options::default() });
    let tasks = host.tasks_on_peers() + host.record()["running_tasks"].as_u64().unwrap();
    let runs = host.run_to_end();
    assert_eq!(runs.last().unwrap().code, 0, "{runs:#?}");
    assert_moved_and_patched(&host, tasks);
}

/// The host is patched and every one of the cluster's `tasks` runs on a peer now.
fn assert_moved_and_patched(host: &TestHost, tasks: u64) {
    assert_eq!(host.record()["status"], "ACTIVE");
    assert_eq!(host.installed("demo-kernel"), "2.0");
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 1, "drained exactly once");
    assert_eq!(host.tasks_on_peers(), tasks, "every task moved to a peer");
    assert_eq!(host.ecs()["unplaceable"], 0, "the scheduler placed every task the drain moved");
}

#[test]
fn a_static_host_port_held_on_every_peer_defers_the_drain() {
    // The host and its one peer both run an "edge" task on host port 8080 (bridge mode):
    // ECS cannot place the host's anywhere. With a second peer, it goes there.
    deferred_then_patched(
        &["--peers", "1", "--port-service", "1"],
        "placement: task edge:1 of service edge fits on none of the 1 in-service peers: host port 8080/tcp taken on 1",
        &["--peers", "2", "--port-service", "1"],
    );
}

#[test]
fn a_dynamic_host_port_does_not_hold_the_drain() {
    // hostPort 0: ECS picks an ephemeral port, nothing is reserved (moto alone reserves "0").
    let host = TestHost::start(Options {
        standin_args: &["--peers", "1", "--port-service", "1", "--host-port", "0"],
        ..Options::default()
    });
    let tasks = host.tasks_on_peers() + host.record()["running_tasks"].as_u64().unwrap();
    assert_eq!(host.run_to_end().last().unwrap().code, 0);
    assert_moved_and_patched(&host, tasks);
}

#[test]
fn a_gpu_task_waits_for_a_peer_with_a_free_gpu() {
    // The host and the peer have one GPU each, taken by a "train" task: none free. With two
    // GPUs each, the peer has one free.
    deferred_then_patched(
        &["--peers", "1", "--gpus", "1", "--gpu-peers", "1"],
        "task train:1 of service train fits on none of the 1 in-service peers: too few free GPUs on 1",
        &["--peers", "1", "--gpus", "2", "--gpu-peers", "1"],
    );
}

#[test]
fn a_distinct_instance_service_needs_a_peer_without_its_task() {
    deferred_then_patched(
        &["--peers", "1", "--distinct-service", "1"],
        "task db:1 of service db fits on none of the 1 in-service peers: runs a task of db (distinctInstance) on 1",
        &["--peers", "2", "--distinct-service", "1"],
    );
}
