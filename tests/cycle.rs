//! The real binary, one host, against moto and real dnf/apt in throwaway roots.

mod common;

use common::{Options, TestHost, assert_patched};

#[test]
fn full_cycle_with_dnf_ends_active_at_v2() {
    let host = TestHost::start(Options::default());
    let check = host.run(&["check"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(check.stdout.contains("3 to install: reboot (demo-kernel matches"), "{}", check.stdout);
    assert!(check.stdout.contains("drain the instance (3 task(s) to move)"), "{}", check.stdout);
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0, "check changes nothing");

    let runs = host.run_to_end();
    assert_eq!(runs.len(), 2, "one reboot, one resume: {runs:#?}");
    assert!(runs[0].rebooted(), "{:?}", runs[0]);
    assert!(runs[0].stderr.contains("rebooting (request 1)"), "{}", runs[0].stderr);
    assert_eq!(runs[1].code, 0, "{:?}", runs[1]);
    assert!(runs[1].stdout.contains("out of service"), "{}", runs[1].stdout);
    assert_patched(&host);

    let again = host.run(&["run"]);
    assert_eq!(again.code, 0);
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
}

#[test]
fn full_cycle_with_apt_ends_active_at_v2() {
    let host = TestHost::start(Options { manager: "apt", ..Options::default() });
    host.run_to_success("");
    assert_patched(&host);
}

#[test]
fn needrestart_never_restarts_ecs_patchd_from_inside_its_own_apt_run() {
    // An in-place install: apt runs while tasks run, with Ubuntu 24.04's needrestart hook.
    let host = TestHost::start(Options { manager: "apt", scenario: "userland", ..Options::default() });
    let log = host.path("needrestart.log");
    let hook = common::repo_path("tests/standins/needrestart-hook.sh");
    // Ubuntu's /etc/apt/apt.conf.d/99needrestart; here in the file the root's apt reads (`-c`).
    let fragment = format!("DPkg::Post-Invoke {{ \"{} {}\"; }};\n", hook.display(), log.display());
    let conf = host.path("pkg/apt.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&fragment);
    std::fs::write(&conf, text).unwrap();
    let runs = host.run_to_end();
    assert_eq!(runs.len(), 1, "one run, not restarted halfway: {runs:#?}");
    assert_eq!(runs[0].code, 0, "{:?}", runs[0]);
    assert_eq!(host.installed("demo-app"), "2.0");
    let seen = std::fs::read_to_string(&log).expect("the hook ran after the install");
    assert!(seen.lines().all(|l| l == "NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=l"), "{seen}");
}

#[test]
fn after_the_boot_into_a_new_kernel_apt_removes_the_kernels_it_no_longer_needs() {
    let host = TestHost::start(Options { manager: "apt", scenario: "kernels", ..Options::default() });
    let runs = host.run_to_success("kernels");
    // apt keeps the newest kernel and the one before it (the fallback), and the running one.
    assert_eq!(host.installed("linux-image-2.0-demo"), "2.0");
    assert_eq!(host.installed("linux-image-1.0-demo"), "1.0", "the fallback stays");
    assert_eq!(host.installed("linux-image-0.9-demo"), "", "removed after the boot into 2.0: {runs:#?}");
    let boot = host.path("pkg/root/boot");
    assert!(!boot.join("vmlinuz-0.9-demo").exists() && boot.join("vmlinuz-1.0-demo").exists());
    let outcome = &host.status()["cycle"]["state"]["outcome"];
    assert_eq!(outcome["rebooted"], true, "{outcome}");
    assert_eq!(outcome["removed"], serde_json::json!(["linux-image-0.9-demo"]), "{outcome}");
    assert!(runs.last().unwrap().stderr.contains("old kernel packages removed: linux-image-0.9-demo"), "{runs:#?}");
}

#[test]
fn agent_only_update_restarts_the_agent_without_draining() {
    for manager in ["dnf", "apt"] {
        agent_only_update_on(manager);
    }
}

/// ecs-init on Amazon Linux, amazon-ecs-init on Debian/Ubuntu: both are the agent.
fn agent_only_update_on(manager: &str) {
    let host = TestHost::start(Options { manager, scenario: "agent-only", ..Options::default() });
    let run = host.run(&["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(host.installed(host.agent_package()), "1.1.0");
    assert_eq!(host.ecs()["agent_version"], "1.1.0", "the restarted agent runs the new version");
    // The restart takes the agent down for a moment: the cycle waited for the new one.
    assert!(run.stderr.contains("the new ECS agent is connected (old=1.0.0, new=1.1.0)"), "{}", run.stderr);
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0);
    assert_eq!(host.calls("UpdateContainerInstancesState:ACTIVE"), 0);
    assert_eq!(host.reboots(), 0);
    assert_eq!(host.record()["running_tasks"], 3, "tasks never moved");
    assert_eq!(host.status()["cycle"]["state"]["outcome"]["result"], "patched");
    assert_eq!(
        host.steps(),
        ["downloading", "waiting-for-slot", "installing-in-place", "restarting-agent", "releasing", "done"]
    );
}

#[test]
fn nothing_to_do_changes_nothing() {
    let host = TestHost::start(Options { scenario: "none", ..Options::default() });
    let run = host.run(&["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("nothing to do"), "{}", run.stdout);
    assert_eq!(host.calls("PutAttributes") + host.calls("UpdateContainerInstancesState:DRAINING"), 0);
    assert_eq!(host.installed("demo-app"), "1.0");
    assert_eq!(host.status()["cycle"]["state"]["outcome"]["result"], "nothing-to-do");
}

/// A host running one standalone task besides its service tasks, with `drain` settings.
fn with_a_standalone_task(drain: &str) -> TestHost {
    TestHost::start(Options { standalone_tasks: 1, config: drain, ..Options::default() })
}

#[test]
fn drain_timeout_puts_the_instance_back_and_fails() {
    let host = with_a_standalone_task("[drain]\ntimeout = \"2s\"\nstandalone_tasks = \"wait\"\n");
    let run = host.run(&["run"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("failed at draining"), "{}", run.stdout);
    assert!(run.stdout.contains("did not finish within 2s"), "{}", run.stdout);
    let record = host.record();
    assert_eq!(record["status"], "ACTIVE", "{record}");
    assert_eq!(record["attributes"], serde_json::json!({}));
    assert_eq!(host.installed("demo-app"), "1.0", "nothing installed");
    assert_eq!(host.reboots(), 0);
    let status = host.status();
    assert_eq!(status["cycle"]["state"]["outcome"]["step"], "draining");
    assert_eq!(status["cycle"]["state"]["outcome"]["kind"], "timeout");
}

#[test]
fn standalone_tasks_are_stopped_after_the_grace_period_when_asked() {
    let host = with_a_standalone_task("[drain]\nstandalone_tasks = \"stop\"\nstandalone_grace = \"1s\"\n");
    host.run_to_success("");
    assert_eq!(host.calls("StopTask"), 1, "only the standalone task is stopped by us");
    assert_eq!(host.record()["status"], "ACTIVE");
}

#[test]
fn standalone_tasks_abort_the_cycle_when_asked() {
    let host = with_a_standalone_task("[drain]\nstandalone_tasks = \"abort\"\nstandalone_grace = \"1s\"\n");
    let run = host.run(&["run"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("\"abort\""), "{}", run.stdout);
    assert_eq!(host.calls("StopTask"), 0);
    assert_eq!(host.record()["status"], "ACTIVE");
}

#[test]
fn an_instance_drained_by_someone_else_is_left_alone() {
    let host = TestHost::start(Options::default());
    host.control("drain-by-other", "{}");
    let run = host.run(&["run"]);
    assert_eq!(run.code, 75, "{run:?}");
    assert!(run.stdout.contains("leaves it alone"), "{}", run.stdout);
    assert_eq!(host.record()["status"], "DRAINING", "still drained by its owner");
    assert_eq!(host.calls("UpdateContainerInstancesState:ACTIVE"), 0);
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0);
    assert_eq!(host.calls("PutAttributes"), 0);
    assert_eq!(host.installed("demo-app"), "1.0");
}

#[test]
fn package_install_failure_reactivates_and_reports() {
    for manager in ["dnf", "apt"] {
        let host = TestHost::start(Options { manager, scenario: "broken", ..Options::default() });
        let run = host.run(&["run"]);
        assert_eq!(run.code, 1, "{manager}: {run:?}");
        assert!(run.stdout.contains("failed at installing"), "{manager}: {}", run.stdout);
        assert!(run.stdout.contains("exit code"), "names the exit code: {}", run.stdout);
        assert!(run.stdout.contains("/demo-kernel/VERSION"), "quotes the output: {}", run.stdout);
        let record = host.record();
        assert_eq!(record["status"], "ACTIVE", "{manager}: {record}");
        assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 1);
        assert_eq!(host.reboots(), 0);
        assert_eq!(host.status()["cycle"]["state"]["outcome"]["kind"], "packages");
    }
}

#[test]
fn a_lost_agent_state_is_adopted_and_the_stale_record_deregistered() {
    let host = TestHost::start(Options::default());
    let mut reboot: Vec<String> = host.config()["host"]["reboot_command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    reboot.push("lose-agent-state".into());
    host.merge_config(&format!("[host]\nreboot_command = {}\n", serde_json::to_string(&reboot).unwrap()));
    host.run_to_success("");
    let records = host.records();
    assert_eq!(records.len(), 1, "exactly one record left: {records:#?}");
    assert_eq!(records[0]["status"], "ACTIVE");
    assert_ne!(records[0]["arn"], host.standin["container_instance_arn"], "the new registration");
    assert_eq!(host.calls("DeregisterContainerInstance"), 1);
    assert_eq!(host.calls("DeregisterContainerInstance:force"), 1, "ECS may still count tasks on the stale record");
}

#[test]
fn a_second_run_says_which_cycle_is_running_and_follows_it() {
    let host =
        TestHost::start(Options { standalone_tasks: 1, config: "[drain]\ntimeout = \"1m\"\n", ..Options::default() });
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_ecs-patchd"))
        .arg("run")
        .envs(host.env())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while host.status()["step"] != "draining" {
        assert!(std::time::Instant::now() < deadline, "the first run never reached draining");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Resuming only, it has nothing to follow: busy, try again later.
    let second = host.run(&["run", "--resume-only"]);
    assert_eq!(second.code, 75, "{second:?}");
    assert!(second.stderr.contains("is at step draining"), "{}", second.stderr);
    assert!(second.stderr.contains(&format!("pid {}", first.id())), "{}", second.stderr);
    // A plain run follows the cycle instead of starting another.
    let mut third = host.spawn(&["run"], &[], "third");
    let log = host.path("third.stderr");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap().contains("following it until it ends") {
        assert!(std::time::Instant::now() < deadline, "{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("is at step draining") && said.contains(&format!("pid {}", first.id())), "{said}");
    for child in [&mut first, &mut third] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn an_update_the_package_manager_skips_fails_the_cycle_before_any_reboot() {
    let host = TestHost::start(Options { scenario: "unsatisfiable", ..Options::default() });
    let run = host.run(&["run"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("failed at installing"), "{}", run.stdout);
    assert!(run.stdout.contains("still pending after the install: demo-app 2.0-1"), "{}", run.stdout);
    assert_eq!(host.record()["status"], "ACTIVE");
    assert_eq!(host.reboots(), 0);
}

#[test]
fn a_reboot_that_never_happens_is_retried_then_the_instance_reactivated() {
    let host = TestHost::start(Options {
        config: "[host]\nreboot_command = [\"true\"]\nreboot_timeout = \"1s\"\nreboot_attempts = 2\n",
        ..Options::default()
    });
    let run = host.run(&["run"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("rebooting (request 2)"), "{}", run.stderr);
    assert!(run.stdout.contains("failed at rebooting: the host did not reboot after 2 request(s)"), "{}", run.stdout);
    assert_eq!(host.record()["status"], "ACTIVE");
    assert_eq!(host.installed("demo-app"), "2.0", "the install itself succeeded");
}
