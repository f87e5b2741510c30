//! What real hosts need from the package side, with real dnf and apt in throwaway roots:
//! release versions, reboot probes, updaters that reboot by themselves, security-only,
//! exclusions, minimum age, the agent's name on each family, the runtime policy, and the
//! update classes that decide whether a host is drained at all.

mod common;

use common::{Options, TestHost, assert_patched, metric};
use serde_json::Value;

fn names(plan: &Value) -> Vec<String> {
    plan["updates"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap().to_string()).collect()
}

fn drains(host: &TestHost) -> u64 {
    host.calls("UpdateContainerInstancesState:DRAINING")
}

#[test]
fn amazon_linux_2023_releases_locked_latest_and_pinned() {
    // Locked: only what release 2023.1 carries; check names the newer one.
    let host = TestHost::start(Options {
        scenario: "release",
        config: "[packages]\nrelease = \"locked\"\n",
        ..Options::default()
    });
    let check = host.check_json();
    assert_eq!(check["release_policy"], "locked");
    assert_eq!(check["plan"]["releases"]["running"], "2023.1");
    assert_eq!(check["plan"]["releases"]["newest"], "2023.2");
    assert_eq!(check["plan"]["releases"]["target"], Value::Null);
    assert_eq!(names(&check["plan"]), ["demo-app"]);
    assert_eq!(check["plan"]["updates"][0]["available"], "2.0-1");

    // Latest (the default, "" below): resolved once to 2023.2, used by the plan, the
    // install and the verification; or the release pinned.
    for policy in ["", "2023.2"] {
        let config = if policy.is_empty() { String::new() } else { format!("[packages]\nrelease = \"{policy}\"\n") };
        let host = TestHost::start(Options { scenario: "release", config: &config, ..Options::default() });
        let check = host.check_json();
        assert_eq!(check["release_policy"], if policy.is_empty() { "latest" } else { policy });
        assert_eq!(check["plan"]["releases"]["target"], "2023.2", "{policy}: {check}");
        let mut planned = names(&check["plan"]);
        planned.sort();
        assert_eq!(planned, ["demo-app", "system-release"], "{policy}");
        let run = host.run(&["run"]);
        assert_eq!(run.code, 0, "{policy}: {run:?}");
        assert_eq!(host.installed("demo-app"), "3.0", "{policy}");
        assert_eq!(host.installed("system-release"), "2023.2", "{policy}");
        let status = host.run(&["status"]);
        assert!(
            status.stdout.contains("release    runs 2023.1, newest 2023.2, installs from 2023.2"),
            "{}",
            status.stdout
        );
        assert_eq!(drains(&host), 0, "{policy}: a userland update needs no drain");
        let again = host.run(&["run"]);
        assert!(again.stdout.contains("nothing to do"), "{policy}: {again:?}");
    }
}

#[test]
fn a_package_that_obsoletes_an_installed_one_is_planned_and_installed() {
    let host = TestHost::start(Options { scenario: "obsoletes", ..Options::default() });
    let check = host.check_json();
    assert_eq!(names(&check["plan"]), ["demo-app-ng"], "{check}");
    let run = host.run(&["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(host.installed("demo-app-ng"), "2.0");
    assert!(host.installed("demo-app").contains("not installed"), "replaced: {}", host.installed("demo-app"));
}

#[test]
fn a_host_without_a_reboot_probe_reboots_by_the_rule() {
    for manager in ["dnf", "apt"] {
        let host = TestHost::start(Options { manager, scenario: "no-probe", ..Options::default() });
        let check = host.check_json();
        assert_eq!(check["reboot_probe"], "rule", "{manager}: {check}");
        assert_eq!(check["plan"]["reboot_probe"], "rule", "{manager}");
        let runs = host.run_to_success(manager);
        assert!(
            runs[0].stderr.contains("demo-kernel was updated and matches the reboot packages"),
            "{manager}: {}",
            runs[0].stderr
        );
        assert_patched(&host);
    }
    // No package named for a reboot: the rule's other half, the newest kernel installed
    // (vmlinuz-2.0, just written) against the running one (1.0), asks for the reboot.
    let host = TestHost::start(Options {
        scenario: "no-probe",
        config: "[packages]\nextra_reboot_packages = []\ndrain = \"always\"\n",
        ..Options::default()
    });
    let runs = host.run_to_success("");
    assert!(runs[0].stderr.contains("the newest kernel installed is 2.0, the running one 1.0"), "{}", runs[0].stderr);
    assert_eq!(host.reboots(), 1);
    // With a probe, the probe answers (the flag file for apt, needs-restarting for dnf).
    let host = TestHost::start(Options { manager: "apt", ..Options::default() });
    assert_eq!(host.check_json()["reboot_probe"], "reboot-required-file");
    let host = TestHost::start(Options::default());
    assert_eq!(host.check_json()["reboot_probe"], "needs-restarting");
}

#[test]
fn an_updater_that_reboots_by_itself_is_refused_unless_allowed() {
    for manager in ["dnf", "apt"] {
        let host = TestHost::start(Options { manager, ..Options::default() });
        let root = host.path("pkg/root");
        let name = if manager == "dnf" {
            std::fs::write(
                root.join("etc/dnf/automatic.conf"),
                "[commands]\napply_updates = yes\nreboot = when-needed\n",
            )
            .unwrap();
            "dnf-automatic"
        } else {
            // What 20auto-upgrades and 50unattended-upgrades say, in the root's apt
            // configuration (apt reads the -c file after apt.conf.d).
            let conf = host.path("pkg/apt.conf");
            let mut text = std::fs::read_to_string(&conf).unwrap();
            text.push_str("APT::Periodic::Unattended-Upgrade \"1\";\nUnattended-Upgrade::Automatic-Reboot \"true\";\n");
            std::fs::write(&conf, text).unwrap();
            "unattended-upgrades"
        };
        let check = host.check_json();
        assert_eq!(check["rebooting_updaters"][0]["name"], name, "{manager}: {check}");
        assert!(check["verdict"].as_str().unwrap().starts_with("nothing:"), "{check}");
        let run = host.run(&["run"]);
        assert_ne!(run.code, 0, "{manager}: {run:?}");
        assert!(run.stderr.contains("packages.allow_rebooting_updater"), "{manager}: {}", run.stderr);
        assert_eq!(drains(&host), 0);
        assert_eq!(host.installed("demo-app"), "1.0", "nothing installed");

        host.merge_config("[packages]\nallow_rebooting_updater = true\n");
        host.run_to_success(manager);
        assert_patched(&host);
    }
}

#[test]
fn security_only_installs_only_security_fixes() {
    for manager in ["dnf", "apt"] {
        let host = TestHost::start(Options {
            manager,
            scenario: "security",
            config: "[packages]\nsecurity_only = true\n",
            ..Options::default()
        });
        let check = host.check_json();
        assert_eq!(check["filters"]["security_only"], true);
        assert_eq!(names(&check["plan"]), ["demo-app"], "{manager}: {check}");
        assert_eq!(check["plan"]["updates"][0]["security"], true);
        let run = host.run(&["run"]);
        assert_eq!(run.code, 0, "{manager}: {run:?}");
        assert_eq!(host.installed("demo-app"), "2.0", "{manager}");
        assert_eq!(host.installed(host.agent_package()), "1.0.0", "{manager}: not a security fix");
    }
}

#[test]
fn excluded_packages_are_held_and_never_installed() {
    for manager in ["dnf", "apt"] {
        let host =
            TestHost::start(Options { manager, config: "[packages]\nexclude = [\"demo-a*\"]\n", ..Options::default() });
        let check = host.check_json();
        assert_eq!(check["held"][0]["name"], "demo-app", "{manager}: {check}");
        assert_eq!(check["held"][0]["why"], "packages.exclude \"demo-a*\"");
        assert!(!names(&check["plan"]).contains(&"demo-app".to_string()));
        host.run_to_success(manager);
        assert_eq!(host.installed("demo-app"), "1.0", "{manager}");
        assert_eq!(host.installed("demo-kernel"), "2.0", "{manager}");
    }
}

#[test]
fn updates_younger_than_the_minimum_age_wait() {
    // dnf: by build time (the test packages were built a moment ago).
    let host = TestHost::start(Options { config: "[packages]\nmin_age = \"1d\"\n", ..Options::default() });
    let check = host.check_json();
    assert_eq!(check["held"].as_array().unwrap().len(), 3, "{check}");
    assert!(check["held"][0]["why"].as_str().unwrap().starts_with("built 0s ago"), "{check}");
    let run = host.run(&["run"]);
    assert!(run.stdout.contains("nothing to do"), "{run:?}");

    // apt has no build time: from when this host first saw each update.
    let host =
        TestHost::start(Options { manager: "apt", config: "[packages]\nmin_age = \"1d\"\n", ..Options::default() });
    let run = host.run(&["run"]);
    assert!(run.stdout.contains("nothing to do"), "{run:?}");
    let seen_file = host.path("state/first-seen.json");
    let seen: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&seen_file).unwrap()).unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(host.check_json()["held"][0]["why"].as_str().unwrap().starts_with("first seen"));
    // Two days later (the record aged by hand), the updates are old enough.
    let aged: serde_json::Map<String, Value> =
        seen.into_iter().map(|(k, _)| (k, Value::from("2020-01-01T00:00:00Z"))).collect();
    std::fs::write(&seen_file, serde_json::to_string(&aged).unwrap()).unwrap();
    let check = host.check_json();
    assert_eq!(check["held"], serde_json::json!([]), "{check}");
    assert_eq!(names(&check["plan"]).len(), 3);
}

#[test]
fn a_userland_update_is_installed_in_place_without_a_drain() {
    for manager in ["dnf", "apt"] {
        let host = TestHost::start(Options { manager, scenario: "userland", ..Options::default() });
        let check = host.check_json();
        assert_eq!(check["plan"]["class"], "in-place", "{check}");
        assert_eq!(check["plan"]["drain"], false);
        let run = host.run(&["run"]);
        assert_eq!(run.code, 0, "{manager}: {run:?}");
        assert!(!run.stdout.contains("out of service"), "never out of service: {}", run.stdout);
        assert_eq!(host.installed("demo-app"), "2.0");
        assert_eq!(drains(&host), 0, "{manager}");
        assert_eq!(host.reboots(), 0);
        assert_eq!(host.record()["running_tasks"], 3, "tasks never moved");
        assert_eq!(host.steps(), ["downloading", "waiting-for-slot", "installing-in-place", "releasing", "done"]);
    }
    // packages.drain = "always" keeps draining for everything.
    let host = TestHost::start(Options {
        scenario: "userland",
        config: "[packages]\ndrain = \"always\"\n",
        ..Options::default()
    });
    host.run_to_success("");
    assert_eq!(drains(&host), 1);
    assert_eq!(host.installed("demo-app"), "2.0");
}

#[test]
fn a_failed_in_place_install_pauses_the_roll_and_a_paused_roll_installs_nothing_in_place() {
    let host = TestHost::start(Options { scenario: "broken-userland", ..Options::dynamodb_leases() });
    let run = host.run(&["run"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert_eq!(drains(&host), 0, "the host kept serving");
    let lease = &host.control("lease", "{}")["demo/default"];
    let reason = lease["paused"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("failed at installing-in-place"), "{lease}");
    let again = host.run(&["run"]);
    assert!(again.stderr.contains("the roll is paused"), "{again:?}");
    assert_eq!(host.upgrades("demo-app"), 0);
}

#[test]
fn a_kernel_module_package_drains_and_reboots_instead_of_restarting_the_runtime() {
    for manager in ["dnf", "apt"] {
        let host = TestHost::start(Options { manager, scenario: "kmod", ..Options::default() });
        let check = host.check_json();
        assert_eq!(check["plan"]["class"], "reboot", "{manager}: {check}");
        assert_eq!(check["plan"]["drain"], true, "{manager}: {check}");
        host.run_to_success(manager);
        assert_eq!(host.installed("kmod-demo"), "2.0", "{manager}");
        assert_eq!((host.reboots(), host.runtime_restarts(), drains(&host)), (1, 0, 1), "{manager}");
    }
}

#[test]
fn a_container_runtime_update_drains_then_follows_the_runtime_policy() {
    // restart (the default): the runtime restarts on the drained host, no reboot.
    for manager in ["dnf", "apt"] {
        let host = TestHost::start(Options { manager, scenario: "runtime", ..Options::default() });
        let check = host.check_json();
        assert_eq!(check["plan"]["class"], "runtime", "{check}");
        assert!(check["verdict"].as_str().unwrap().contains("restart the container runtime"), "{check}");
        let run = host.run(&["run"]);
        assert_eq!(run.code, 0, "{manager}: {run:?}");
        assert_eq!(host.installed("containerd"), "2.0");
        assert_eq!(host.runtime_restarts(), 1, "{manager}");
        assert_eq!(host.reboots(), 0, "{manager}");
        assert_eq!(drains(&host), 1, "{manager}");
        assert_eq!(host.record()["status"], "ACTIVE");
        let steps = host.steps();
        assert!(steps.contains(&"restarting-runtime".to_string()), "{steps:?}");
        assert!(!steps.contains(&"rebooting".to_string()), "{steps:?}");
    }
    // reboot: as for a kernel.
    let host = TestHost::start(Options {
        scenario: "runtime",
        config: "[packages]\nruntime = \"reboot\"\n",
        ..Options::default()
    });
    host.run_to_success("");
    assert_eq!((host.reboots(), host.runtime_restarts()), (1, 0));
    // leave: installed on the drained host, the old daemon keeps running (said in the log).
    let host = TestHost::start(Options {
        scenario: "runtime",
        config: "[packages]\nruntime = \"leave\"\n",
        ..Options::default()
    });
    let run = host.run(&["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!((host.reboots(), host.runtime_restarts()), (0, 0));
    assert!(run.stderr.contains("keeps running its old version"), "{}", run.stderr);
}

#[test]
fn apt_waits_for_the_lists_lock_that_apt_daily_holds_after_boot() {
    // `apt-get update` does not wait for the lists lock by itself (DPkg::Lock::Timeout
    // covers dpkg's lock only): hold it for 8 s, as apt-daily would (the run reaches
    // `apt-get update` within a second or two).
    let host = TestHost::start(Options { manager: "apt", scenario: "userland", ..Options::default() });
    let lock = host.path("pkg/root/var/lib/apt/lists/lock");
    let mut holder = std::process::Command::new("python3")
        .args([
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); \
             fcntl.lockf(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(8)",
        ])
        .arg(&lock)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    let run = host.run(&["run"]);
    holder.wait().unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    // Said once, naming the holder in apt's own words.
    assert_eq!(run.stderr.matches("holds the package manager's lock (").count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("It is held by process"), "{}", run.stderr);
    assert_eq!(host.installed("demo-app"), "2.0");
}

/// Seconds from now until the RFC 3339 time `at`.
fn seconds_until(at: &Value) -> i64 {
    let at = humantime::parse_rfc3339(at.as_str().expect("a time")).expect("RFC 3339");
    match at.duration_since(std::time::SystemTime::now()) {
        Ok(ahead) => ahead.as_secs() as i64,
        Err(behind) => -(behind.duration().as_secs() as i64),
    }
}

const DAY: i64 = 86400;

#[test]
fn a_kernel_whose_fixes_live_patches_cover_waits_while_its_live_patch_loads_in_place() {
    let host = TestHost::start(Options { scenario: "livepatch", ..Options::default() });
    // Off unless chosen: the kernel drains and reboots as before, and says why.
    let check = host.check_json();
    let live = &check["plan"]["livepatch"];
    assert_eq!(live["tool"], "kpatch", "{check}");
    assert_eq!(live["loaded"], serde_json::json!(["livepatch_demo_1_0"]));
    assert!(live["reboot_now"].as_str().unwrap().contains("kernel_reboot_within is not set"), "{live}");
    assert_eq!(check["plan"]["class"], "reboot");

    host.merge_config("[packages]\nkernel_reboot_within = \"30d\"\n");
    host.metrics_textfile();
    let check = host.check_json();
    let live = &check["plan"]["livepatch"];
    assert_eq!(live["cves"], serde_json::json!(["CVE-2026-0001", "CVE-2026-0002"]), "{check}");
    assert_eq!(live["installing"], serde_json::json!(["kernel-livepatch-1.0"]));
    let deferred = &live["deferred"];
    assert_eq!(deferred["packages"], serde_json::json!(["demo-kernel 2.0-1"]), "{live}");
    assert!((29 * DAY..=30 * DAY).contains(&seconds_until(&deferred["deadline"])), "{deferred}");
    assert_eq!(names(&check["plan"]), ["demo-app", "kernel-livepatch-1.0"]);
    assert_eq!((&check["plan"]["class"], &check["plan"]["drain"]), (&"in-place".into(), &false.into()));
    assert!(check["held"].as_array().unwrap().iter().any(|h| h["name"] == "demo-kernel"), "{check}");
    assert!(check["verdict"].as_str().unwrap().contains("the pending kernel waits until"), "{check}");
    // A plan that drains the host anyway takes the kernel along.
    host.merge_config("[packages]\ndrain = \"always\"\n");
    let check = host.check_json();
    assert!(check["plan"]["livepatch"]["reboot_now"].as_str().unwrap().contains("drained anyway"), "{check}");
    assert!(names(&check["plan"]).contains(&"demo-kernel".to_string()), "{check}");
    host.unset_config("packages", "drain");
    let text = host.run(&["check"]).stdout;
    assert!(text.contains("livepatch  kpatch on kernel 1.0: loaded livepatch_demo_1_0"), "{text}");
    assert!(text.contains("kernel     demo-kernel 2.0-1 pending since"), "{text}");

    let run = host.run(&["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("live patch(es) kernel-livepatch-1.0 loaded into the running kernel 1.0"), "{run:?}");
    assert_eq!((drains(&host), host.reboots()), (0, 0), "zero time out of service");
    assert_eq!((host.installed("kernel-livepatch-1.0"), host.installed("demo-kernel")), ("2.0".into(), "1.0".into()));
    assert_eq!(metric(&host, "ecs_patchd_kernel_deferred"), "1");
    assert_eq!(metric(&host, "ecs_patchd_livepatch_cves_covered"), "2");
    let status = host.status();
    assert_eq!(status["livepatch"]["deferred"]["packages"][0], "demo-kernel 2.0-1", "{status}");
    // Not up to date: the kernel is NON_COMPLIANT, each CVE the live patches fix COMPLIANT.
    let items = host.ssm_requests("PutComplianceItems")[0]["Items"].as_array().unwrap().clone();
    let item =
        |id: &str| items.iter().find(|i| i["Id"] == id).unwrap_or_else(|| panic!("no {id} in {items:?}")).clone();
    assert_eq!(item("kernel-deferred")["Status"], "NON_COMPLIANT");
    assert_eq!(item("kernel-deferred")["Details"]["CoveredCVEs"], "CVE-2026-0001 CVE-2026-0002");
    assert_eq!(item("CVE-2026-0002")["Status"], "COMPLIANT");
    assert!(!items.iter().any(|i| i["Id"] == "ecs-patchd"), "never \"no update pending\": {items:?}");

    // No later than three months after the running kernel's release (its package's build).
    host.merge_config("[packages]\nkernel_reboot_within = \"365d\"\n");
    let deadline = seconds_until(&host.check_json()["plan"]["livepatch"]["deferred"]["deadline"]);
    assert!((89 * DAY..=90 * DAY).contains(&deadline), "{deadline}");

    // Past the deadline, the next run drains and reboots as before.
    let pending = host.path("state/kernel-pending.json");
    let mut record: Value = serde_json::from_str(&std::fs::read_to_string(&pending).unwrap()).unwrap();
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(400 * DAY as u64);
    record["since"] = humantime::format_rfc3339_seconds(long_ago).to_string().into();
    std::fs::write(&pending, record.to_string()).unwrap();
    let check = host.check_json();
    assert!(check["plan"]["livepatch"]["reboot_now"].as_str().unwrap().contains("has passed"), "{check}");
    assert_eq!(check["plan"]["class"], "reboot");
    host.run_to_success("past the deadline");
    assert_eq!((drains(&host), host.reboots(), host.installed("demo-kernel")), (1, 1, "2.0".into()));
    assert_eq!(host.run(&["run"]).code, 0, "nothing left to do");
    assert!(!pending.exists(), "forgotten once the new kernel runs and nothing is pending");
}

#[test]
fn a_kernel_that_fixes_what_no_live_patch_covers_drains_and_reboots() {
    let host = TestHost::start(Options {
        scenario: "livepatch-uncovered",
        config: "[packages]\nkernel_reboot_within = \"30d\"\n",
        ..Options::default()
    });
    let check = host.check_json();
    let why = check["plan"]["livepatch"]["reboot_now"].as_str().unwrap();
    assert!(why.contains("fixes CVE-2026-0003 that no live patch loaded covers"), "{check}");
    assert_eq!(check["plan"]["class"], "reboot");
    host.run_to_success("uncovered");
    assert_eq!((drains(&host), host.reboots(), host.installed("demo-kernel")), (1, 1, "2.0".into()));
}

#[test]
fn a_live_patch_that_does_not_load_fails_the_cycle_and_pauses_the_roll() {
    let host = TestHost::start(Options {
        scenario: "livepatch-unloaded",
        config: "[coordination]\nbackend = \"dynamodb\"\ndynamodb_table = \"leases\"\n\
                 [packages]\nkernel_reboot_within = \"30d\"\n[packages.livepatch]\nload_timeout = \"1s\"\n",
        ..Options::dynamodb_leases()
    });
    let run = host.run(&["run"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("a live patch installed for the running kernel did not load"), "{run:?}");
    assert!(run.stderr.contains("livepatch_demo_2_0.ko: Invalid parameters"), "the tool's own words: {run:?}");
    assert_eq!(drains(&host), 0, "the host kept serving");
    let lease = &host.control("lease", "{}")["demo/default"];
    assert!(lease["paused"]["reason"].as_str().unwrap_or_default().contains("installing-in-place"), "{lease}");
}

#[test]
fn canonical_livepatch_lets_a_kernel_wait_while_it_reports_the_running_kernel_fully_patched() {
    let host = TestHost::start(Options {
        manager: "apt",
        config: "[packages]\nkernel_reboot_within = \"30d\"\n",
        ..Options::default()
    });
    // Without the client (not enabled), nothing changes.
    let check = host.check_json();
    assert!(check["plan"]["livepatch"].is_null(), "{check}");
    assert_eq!(check["plan"]["class"], "reboot");
    let status = |state: &str, supported: &str| {
        serde_json::json!({"Client-Version": "10.8.3", "Status": [{"Kernel": "1.0-demo", "Running": true,
            "Livepatch": {"CheckState": "checked", "State": state, "Version": "104.1",
                "Fixes": [{"Name": "cve-2026-0001", "Patched": true}]},
            "Supported": supported}]})
        .to_string()
    };
    std::fs::write(host.path("pkg/livepatch-status.json"), status("applied", "kernel-upgrade-required")).unwrap();
    let check = host.check_json();
    let why = check["plan"]["livepatch"]["reboot_now"].as_str().unwrap();
    assert!(why.contains("kernel-upgrade-required"), "{check}");
    std::fs::write(host.path("pkg/livepatch-status.json"), status("applied", "supported")).unwrap();
    let check = host.check_json();
    let live = &check["plan"]["livepatch"];
    assert_eq!(live["deferred"]["cves"], serde_json::json!(["CVE-2026-0001"]), "{check}");
    assert_eq!(check["plan"]["drain"], false);
    host.run_to_success("fully patched");
    assert_eq!((drains(&host), host.reboots(), host.installed("demo-kernel")), (0, 0, "1.0".into()));
    assert_eq!(host.installed("demo-app"), "2.0");
}
