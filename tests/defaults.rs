//! Safe out of the box: what the packaged defaults do on a fleet baked from one image, on
//! Amazon Linux 2023's locked releases, and on a host whose reboot is due with nothing to
//! install.

mod common;

use common::{Fleet, Options, TestHost, metric};

/// The metrics textfile's value of `name` (no labels), after the host's last command.
fn with_textfile(host: &TestHost) {
    host.metrics_textfile();
}

#[test]
fn the_packaged_defaults_drain_nothing_however_many_hosts_start_at_once() {
    // The packaged configuration sets nothing: every key is commented out.
    let packaged: toml::Table =
        std::fs::read_to_string(common::repo_path("packaging/config.toml")).unwrap().parse().unwrap();
    fn sets_nothing(table: &toml::Table) -> bool {
        table.values().all(|v| v.as_table().is_some_and(sets_nothing))
    }
    assert!(sets_nothing(&packaged), "{packaged:?}");

    let fleet = Fleet::start(3, &[], "dnf", "full", "");
    for host in &fleet.hosts {
        host.unset_config("coordination", "backend");
        with_textfile(host);
    }
    // Three hosts of one image, started in the same instant.
    let children: Vec<_> = fleet.hosts.iter().map(TestHost::spawn_run).collect();
    for (host, mut child) in fleet.hosts.iter().zip(children) {
        let status = child.wait().unwrap();
        let stderr = std::fs::read_to_string(host.path("run.stderr")).unwrap();
        assert_eq!(status.code(), Some(75), "deferred, nothing changed: {stderr}");
        assert!(stderr.contains("coordination.backend is not chosen (report-only)"), "{stderr}");
        assert!(stderr.contains("3 update(s) pending"), "{stderr}");
        assert_eq!(host.installed("demo-app"), "1.0", "nothing installed");
        assert_eq!(host.record()["status"], "ACTIVE");
        // What is pending is reported all the same.
        assert_eq!(metric(host, "ecs_patchd_updates_pending"), "3");
    }
    assert_eq!(fleet.hosts[0].calls("UpdateContainerInstancesState:DRAINING"), 0, "no host drained");

    let check = fleet.hosts[0].check_json();
    assert_eq!(check["coordination_backend"], "report-only", "{check}");
    let verdict = check["verdict"].as_str().unwrap();
    assert!(verdict.starts_with("nothing: 3 update(s) pending"), "{verdict}");
    assert!(verdict.contains("choose \"dynamodb\" or \"fleetlock\""), "{verdict}");

    // Chosen explicitly, "none" patches, and says what it does not do.
    let host = &fleet.hosts[0];
    host.merge_config("[coordination]\nbackend = \"none\"\n");
    let runs = host.run_to_success("none");
    assert!(runs[0].stderr.contains("no lock is shared with other hosts"), "{}", runs[0].stderr);
    assert_eq!(host.installed("demo-app"), "2.0");
}

#[test]
fn a_newer_release_not_applied_is_pending_everywhere() {
    let host = TestHost::start(Options {
        scenario: "release",
        config: "[packages]\nrelease = \"locked\"\n",
        ..Options::default()
    });
    with_textfile(&host);
    let check = host.check_json();
    assert_eq!(check["release_available"], "2023.2", "{check}");
    assert_eq!(metric(&host, "ecs_patchd_release_pending"), "1");
    let items = &host.ssm_requests("PutComplianceItems")[0]["Items"];
    let release = items.as_array().unwrap().iter().find(|i| i["Id"] == "release").expect("a release item");
    assert_eq!(release["Status"], "NON_COMPLIANT", "{items}");
    assert_eq!(release["Details"]["AvailableVersion"], "2023.2", "{release}");

    // Once the locked release's own update is installed, the host is still not up to date.
    let run = host.run(&["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(host.installed("demo-app"), "2.0");
    let check = host.check_json();
    let verdict = check["verdict"].as_str().unwrap();
    assert!(verdict.contains("release 2023.2 is published and not applied"), "{verdict}");
    assert_eq!(metric(&host, "ecs_patchd_release_pending"), "1");
    let text = host.run(&["check"]);
    assert!(text.stdout.contains("pending    release 2023.2 is published and not applied"), "{}", text.stdout);

    // The default follows the newest release, and then nothing is pending.
    host.unset_config("packages", "release");
    let run = host.run(&["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(host.installed("system-release"), "2023.2");
    assert_eq!(host.check_json()["release_available"], serde_json::Value::Null);
    assert_eq!(metric(&host, "ecs_patchd_release_pending"), "0");
}

#[test]
fn a_reboot_that_is_due_with_nothing_to_install_is_a_cycle() {
    // Ubuntu: unattended-upgrades installed a kernel and left /var/run/reboot-required.
    // Amazon Linux: a kernel newer than the running one (the rule), or one needs-restarting
    // reports as installed since the boot.
    for (manager, how) in [("apt", "flag"), ("dnf", "rule"), ("dnf", "needs-restarting")] {
        let scenario = if how == "rule" { "none-no-probe" } else { "none" };
        let host = TestHost::start(Options { manager, scenario, ..Options::default() });
        with_textfile(&host);
        let root = host.path("pkg/root");
        match how {
            "flag" => std::fs::write(root.join("var/run/reboot-required"), "").unwrap(),
            "rule" => std::fs::write(host.path("pkg/osrelease"), "0.9\n").unwrap(),
            _ => std::fs::write(root.join("etc/dnf/plugins/needs-restarting.d/demo.conf"), "demo-kernel\n").unwrap(),
        }
        let check = host.check_json();
        let label = format!("{manager}/{how}");
        assert_eq!(check["plan"]["updates"].as_array().unwrap().len(), 0, "{label}: {check}");
        assert!(check["plan"]["reboot_due"].is_string(), "{label}: {check}");
        let verdict = check["verdict"].as_str().unwrap();
        assert!(verdict.starts_with("drain the instance") && verdict.contains("a reboot is due"), "{label}: {verdict}");
        assert_eq!(metric(&host, "ecs_patchd_reboot_due"), "1", "{label}");
        let items = &host.ssm_requests("PutComplianceItems")[0]["Items"];
        assert!(items.as_array().unwrap().iter().any(|i| i["Id"] == "reboot-due" && i["Status"] == "NON_COMPLIANT"));

        let runs = host.run_to_success(&label);
        assert_eq!(host.reboots(), 1, "{label}: {runs:#?}");
        assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 1, "{label}");
        assert_eq!(host.record()["status"], "ACTIVE", "{label}");
        assert_eq!(
            host.steps(),
            [
                "downloading",
                "waiting-for-slot",
                "draining",
                "installing",
                "rebooting",
                "returning",
                "reactivating",
                "releasing",
                "done"
            ],
            "{label}"
        );
        assert_eq!(metric(&host, "ecs_patchd_reboot_due"), "0", "{label}");

        // Still due after ecs-patchd's own reboot (needs-restarting compares with the real
        // machine's boot, which no stand-in reboot moves): not rebooted again.
        let again = host.run(&["run"]);
        assert_eq!(again.code, 0, "{label}: {again:?}");
        assert!(again.stdout.contains("nothing to do"), "{label}: {again:?}");
        assert_eq!(host.reboots(), 1, "{label}");
        if how == "needs-restarting" {
            assert!(again.stderr.contains("in the boot ecs-patchd's own last reboot started"), "{}", again.stderr);
        }
    }
}

#[test]
fn runtime_updates_by_unattended_upgrades_under_running_tasks_are_named() {
    let host = TestHost::start(Options { manager: "apt", scenario: "none", ..Options::default() });
    let log = host.path("history.log");
    host.merge_config(&format!("[packages.apt]\nhistory_log = \"{}\"\n", log.display()));
    let now = std::process::Command::new("date").arg("+%Y-%m-%d  %H:%M:%S").output().unwrap();
    let now = String::from_utf8(now.stdout).unwrap();
    std::fs::write(
        &log,
        format!(
            "Start-Date: {}\nCommandline: /usr/bin/unattended-upgrade\nUpgrade: containerd:amd64 (1.0, 1.1), \
             curl:amd64 (8.1, 8.2)\nEnd-Date: {}\n",
            now.trim(),
            now.trim()
        ),
    )
    .unwrap();
    let check = host.check_json();
    let notes = check["runtime_updated_in_place"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{check}");
    assert!(notes[0].as_str().unwrap().contains("replaced containerd 1.0 with 1.1"), "{check}");
    let run = host.run(&["check"]);
    assert!(run.stdout.contains("warning    unattended-upgrades replaced containerd"), "{}", run.stdout);
    assert!(run.stderr.contains("Unattended-Upgrade::Package-Blacklist"), "the log says it too: {}", run.stderr);
}
