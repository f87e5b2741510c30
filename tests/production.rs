//! Running in production: the daemon under systemd's protocol, maintenance windows, SSM Run
//! Command (exit 194), SSM compliance and inventory, metrics, the webhook, and hooks.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{Options, TestHost, assert_patched, day_of_week};
use serde_json::Value;

/// The SSM document's script with `parameters` substituted, as the SSM agent runs it.
fn ssm_script(host: &TestHost, parameters: &[(&str, &str)]) -> std::path::PathBuf {
    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(common::repo_path("packaging/ssm/ecs-patchd-run.json")).unwrap())
            .unwrap();
    assert_eq!(document["schemaVersion"], "2.2");
    let step = &document["mainSteps"][0];
    assert_eq!(step["action"], "aws:runShellScript");
    let mut script: String =
        step["inputs"]["runCommand"].as_array().unwrap().iter().map(|l| format!("{}\n", l.as_str().unwrap())).collect();
    for (name, value) in parameters {
        let allowed = &document["parameters"][name]["allowedValues"];
        assert!(allowed.as_array().unwrap().iter().any(|v| v == value), "{name}={value} is not allowed");
        script = script.replace(&format!("{{{{ {name} }}}}"), value);
    }
    assert!(!script.contains("{{"), "every parameter substituted: {script}");
    let path = host.path("ssm-step.sh");
    std::fs::write(&path, script).unwrap();
    path
}

/// What the SSM stand-in recorded for `operation`, last first.
#[test]
fn ssm_run_command_reboots_through_exit_194_and_finishes_after_the_boot() {
    let host = TestHost::start(Options::default());
    let script =
        ssm_script(&host, &[("Operation", "Install"), ("RebootOption", "IfNeeded"), ("IgnoreWindows", "false")]);
    let ssm_env = [("AWS_SSM_INSTANCE_ID", host.standin["instance_id"].as_str().unwrap())];
    let first = host.run_program("sh", &[script.to_str().unwrap()], &ssm_env);
    assert_eq!(first.code, 194, "the reboot is the SSM agent's: {first:?}");
    assert!(first.stderr.contains("handed to the SSM agent"), "{}", first.stderr);
    assert_eq!(host.reboots(), 0, "ecs-patchd did not reboot by itself");
    assert_eq!(host.status()["step"], "rebooting");
    assert_eq!(host.record()["status"], "DRAINING");
    assert_eq!(host.installed("demo-kernel"), "2.0");

    // The SSM agent reboots the host and runs the same step again.
    host.boot();
    let second = host.run_program("sh", &[script.to_str().unwrap()], &ssm_env);
    assert_eq!(second.code, 0, "{second:?}");
    let record = host.record();
    assert_eq!(record["status"], "ACTIVE", "{record}");
    let status = host.status();
    assert_eq!(status["cycle"]["state"]["outcome"]["result"], "patched", "{status}");
    assert_eq!(status["cycle"]["state"]["outcome"]["rebooted"], true, "{status}");
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 1, "drained once");

    // A third run (the document sent again) has nothing left to do.
    let third = host.run_program("sh", &[script.to_str().unwrap()], &ssm_env);
    assert_eq!(third.code, 0, "{third:?}");
    assert!(third.stdout.contains("nothing to do"), "{}", third.stdout);

    // Compliance and inventory after the cycle: compliant, the patch recorded.
    let compliance = &host.ssm_requests("PutComplianceItems")[0];
    assert_eq!(compliance["ComplianceType"], "Custom:EcsPatchd");
    assert_eq!(compliance["ResourceType"], "ManagedInstance");
    assert_eq!(compliance["ResourceId"], host.standin["instance_id"]);
    assert!(compliance.get("UploadType").is_none(), "for association compliance only; the default is COMPLETE");
    assert_eq!(compliance["Items"].as_array().unwrap().len(), 1, "{compliance}");
    assert_eq!(compliance["Items"][0]["Status"], "COMPLIANT");
    assert_eq!(compliance["Items"][0]["Id"], "ecs-patchd");
    let inventory = &host.ssm_requests("PutInventory")[0];
    assert_eq!(inventory["InstanceId"], host.standin["instance_id"]);
    let item = &inventory["Items"][0];
    assert_eq!(item["TypeName"], "Custom:EcsPatchd");
    assert_eq!(item["SchemaVersion"], "1.0");
    let content = &item["Content"][0];
    assert_eq!(content["LastOutcome"], "patched", "the last patch, not the empty third run: {content}");
    assert_eq!(content["UpdatesPending"], "0");
    assert_eq!(content["AgentVersion"], "1.1.0");
    assert_eq!(content["Release"], "2023.1");
    assert!(content["LastPatchTime"].as_str().unwrap().ends_with('Z'), "{content}");
    for package in ["demo-app", "demo-kernel", "ecs-init"] {
        assert!(content["PackagesChanged"].as_str().unwrap().split(' ').any(|p| p == package), "{content}");
    }
}

#[test]
fn check_reports_each_pending_update_to_ssm_and_to_the_metrics_textfile() {
    let host = TestHost::start(Options { scenario: "security", ..Options::default() });
    let textfile = host.path("ecs_patchd.prom");
    host.merge_config(&format!("[report]\nmetrics_textfile = \"{}\"\n", textfile.display()));
    let check = host.check_json();
    let pending: Vec<&str> =
        check["plan"]["updates"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert!(!pending.is_empty(), "{check}");

    let compliance = &host.ssm_requests("PutComplianceItems")[0];
    assert_eq!(compliance["ComplianceType"], "Custom:EcsPatchd");
    assert!(compliance["ExecutionSummary"]["ExecutionTime"].is_number(), "{compliance}");
    let items = compliance["Items"].as_array().unwrap();
    assert_eq!(items.len(), pending.len(), "one item per pending update: {compliance}");
    for update in check["plan"]["updates"].as_array().unwrap() {
        let item =
            items.iter().find(|i| i["Id"] == update["name"]).unwrap_or_else(|| panic!("{update} in {compliance}"));
        assert_eq!(item["Status"], "NON_COMPLIANT");
        assert_eq!(item["Details"]["AvailableVersion"], update["available"]);
        let security = update["security"].as_bool().unwrap_or(false);
        assert_eq!(item["Details"]["Classification"], if security { "Security" } else { "Update" }, "{item}");
        let expected = match update["severity"].as_str() {
            Some("Important") => "HIGH",
            Some(other) => panic!("unexpected severity {other}"),
            None if security => "UNSPECIFIED",
            None => "LOW",
        };
        assert_eq!(item["Severity"], expected, "{item}");
    }
    assert!(
        check["plan"]["updates"].as_array().unwrap().iter().any(|u| u["severity"] == "Important"),
        "the advisory's severity is read: {check}"
    );
    let inventory = &host.ssm_requests("PutInventory")[0]["Items"][0]["Content"][0];
    assert_eq!(inventory["UpdatesPending"], pending.len().to_string());
    assert_eq!(inventory["LastOutcome"], "none");

    let metrics = std::fs::read_to_string(&textfile).unwrap();
    for line in [
        format!("ecs_patchd_updates_pending {}", pending.len()),
        "ecs_patchd_step{step=\"idle\"} 1".to_string(),
        "ecs_patchd_lease_held 0".to_string(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing:\n{metrics}");
    }
    assert!(metrics.contains("ecs_patchd_last_check_timestamp_seconds "), "{metrics}");
}

/// Gives `host` one maintenance window of a minute two days from now (closed), and answers
/// that day (`YYYY-MM-DD…`).
fn closed_window(host: &TestHost) -> String {
    let later = std::time::SystemTime::now() + Duration::from_secs(2 * 24 * 3600);
    let day = humantime::format_rfc3339(later).to_string();
    let weekday = day_of_week(&day[..10]);
    host.merge_config(&format!(
        "[schedule]\ntime_zone = \"UTC\"\nwindows = [{{ days = [\"{weekday}\"], start = \"03:00\", length = \"1m\" }}]\n"
    ));
    day
}

#[test]
fn through_ssm_a_deferral_succeeds_with_its_reason_and_a_failure_fails() {
    let host = TestHost::start(Options::default());
    closed_window(&host);
    let script =
        ssm_script(&host, &[("Operation", "Install"), ("RebootOption", "IfNeeded"), ("IgnoreWindows", "false")]);
    let ssm_env = [("AWS_SSM_INSTANCE_ID", host.standin["instance_id"].as_str().unwrap())];
    // ecs-patchd says "not now" (75): Run Command would count that as Failed and stop the
    // window for the fleet; the document ends it as Success, with the reason.
    let deferred = host.run_program("sh", &[script.to_str().unwrap()], &ssm_env);
    assert_eq!(deferred.code, 0, "{deferred:?}");
    assert!(deferred.stderr.contains("outside the maintenance window"), "{}", deferred.stderr);
    assert!(deferred.stdout.contains("deferred this run (exit 75"), "{}", deferred.stdout);
    assert_eq!(host.installed("demo-app"), "1.0", "nothing installed");
    // A setup error is a failure, and stays one.
    host.merge_config("[coordination]\nmax_unavailable = \"a few\"\n");
    let failed = host.run_program("sh", &[script.to_str().unwrap()], &ssm_env);
    assert_eq!(failed.code, 78, "{failed:?}");
    assert!(failed.stderr.contains("max_unavailable"), "{}", failed.stderr);
    assert!(!failed.stdout.contains("deferred"), "{}", failed.stdout);
}

#[test]
fn outside_its_window_run_starts_nothing_unless_asked_to() {
    let host = TestHost::start(Options::default());
    let day = closed_window(&host);
    let run = host.run(&["run"]);
    assert_eq!(run.code, 75, "{run:?}");
    assert!(run.stderr.contains("outside the maintenance window"), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("{} 03:00 UTC", &day[..10])), "names the next window: {}", run.stderr);
    assert_eq!(host.calls("DescribeContainerInstances"), 0, "no AWS call");
    assert!(!host.journal_file().exists());

    let check = host.check_json();
    assert_eq!(check["window"]["open"], false, "{check}");
    assert!(check["window"]["next_opens_at"].as_str().unwrap().starts_with(&format!("{}T03:00:00", &day[..10])));
    assert!(check["verdict"].as_str().unwrap().starts_with("nothing yet"), "{check}");

    assert_eq!(host.installed("demo-app"), "1.0");
    let forced = host.run(&["run", "--now"]);
    assert!(forced.rebooted(), "{forced:?}");
    // Past the drain, the window no longer matters: the resume finishes.
    let resumed = host.run(&["run"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_patched(&host);
}

/// A hook of `point` that runs `body`.
fn hook(host: &TestHost, point: &str, name: &str, body: &str) {
    let dir = host.path(&format!("hooks.d/{point}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(host.path("hooks.d"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_pre_drain_hook_that_fails_keeps_the_instance_active_and_gives_the_slot_back() {
    let host = TestHost::start(Options::dynamodb_leases());
    let seen = host.path("pre-drain.env");
    hook(&host, "pre-drain", "10-record", &format!("env | grep ^ECS_PATCHD_ | sort > {}", seen.display()));
    hook(&host, "pre-drain", "20-refuse", "echo 'database migration running' >&2; exit 1");
    let run = host.run(&["run"]);
    assert_eq!(run.code, 75, "a hook's no is not the host's failure: {run:?}");
    assert!(run.stdout.contains("database migration running"), "{run:?}");
    let env = std::fs::read_to_string(&seen).unwrap();
    for line in [
        "ECS_PATCHD_HOOK=pre-drain".to_string(),
        "ECS_PATCHD_STEP=draining".to_string(),
        format!("ECS_PATCHD_INSTANCE_ID={}", host.standin["instance_id"].as_str().unwrap()),
        "ECS_PATCHD_CLUSTER=demo".to_string(),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing:\n{env}");
    }
    assert!(env.contains("ECS_PATCHD_CYCLE="), "{env}");
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0, "no drain");
    assert_eq!(host.record()["status"], "ACTIVE");
    assert_eq!(host.installed("demo-app"), "1.0");
    let lease = host.control("lease", "{}");
    assert_eq!(lease["demo/default"]["holders"], serde_json::json!([]), "slot given back: {lease}");
    assert!(lease["demo/default"]["paused"].is_null(), "the roll goes on: {lease}");
}

#[test]
fn a_post_boot_hook_that_fails_keeps_the_host_out_of_service_and_pauses_the_roll() {
    let host = TestHost::start(Options {
        config: "[coordination]\nbackend = \"dynamodb\"\ndynamodb_table = \"leases\"\n",
        standin_args: &["--lease-table", "leases"],
        ..Options::default()
    });
    host.merge_config(&format!("[report]\nwebhook_url = \"{}\"\n", host.standin["webhook_url"].as_str().unwrap()));
    hook(&host, "post-boot", "10-health", "echo 'health check failed: port 8080 closed'; exit 2");
    let runs = host.run_to_end();
    let last = runs.last().unwrap();
    assert_eq!(last.code, 1, "{runs:#?}");
    assert!(last.stderr.contains("port 8080 closed") || last.stdout.contains("port 8080 closed"), "{last:?}");
    assert_eq!(host.reboots(), 1);
    assert_eq!(host.record()["status"], "DRAINING", "stays out of service");
    let lease = host.control("lease", "{}");
    assert!(lease["demo/default"]["paused"].is_object(), "the roll is paused: {lease}");
    let mut events: Vec<String> = host
        .control("webhooks", "{}")
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["body"]["event"].as_str().unwrap().to_string())
        .collect();
    // The last two are posted back to back, in the background: either may arrive first.
    events[2..].sort();
    assert_eq!(events, ["drain-started", "rebooting", "failed", "paused"], "no back-in-service");
    // Later checks leave it for the operator: a drain left on purpose is no lost cycle's,
    // also once a later cycle (with nothing to do) is the journal's last.
    for later in ["the next check", "the one after"] {
        let run = host.run(&["run", "--now"]);
        assert_eq!(run.code, 0, "{later}: {run:?}");
        assert_eq!(host.record()["status"], "DRAINING", "{later}: still out of service");
    }
    assert_eq!(host.calls("UpdateContainerInstancesState:ACTIVE"), 0);
}

#[test]
fn a_pre_reboot_hook_that_fails_puts_the_host_back_without_rebooting_and_pauses_the_roll() {
    let host = TestHost::start(Options::dynamodb_leases());
    hook(&host, "pre-reboot", "10-refuse", "echo 'a job is still writing to the disk'; exit 1");
    let run = host.run(&["run"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("a job is still writing to the disk"), "{run:?}");
    assert_eq!(host.reboots(), 0, "no reboot");
    assert_eq!(host.installed("demo-kernel"), "2.0", "installed, waiting for a reboot");
    assert_eq!(host.record()["status"], "ACTIVE", "back in service");
    let lease = host.control("lease", "{}");
    assert!(lease["demo/default"]["paused"].is_object(), "the roll is paused: {lease}");
    assert_eq!(lease["demo/default"]["holders"], serde_json::json!([]), "{lease}");
}

/// Collects what the daemon tells systemd on a notify socket of the test's own, reading it
/// at once, as systemd does (a datagram socket holds only a few unread messages; after that
/// the sender blocks).
struct NotifySocket {
    path: std::path::PathBuf,
    received: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn new(host: &TestHost) -> Self {
        let path = host.path("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = std::sync::Arc::clone(&received);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                into.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        Self { path, received }
    }

    /// Waits until a message contains `needle` (up to `limit`).
    fn wait_for(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = self.received.lock().unwrap().iter().find(|m| m.contains(needle)) {
                return found.clone();
            }
            assert!(Instant::now() < deadline, "no {needle:?} among {:#?}", self.received.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits (up to `limit`) for `child` to exit; its exit code. `log` is its stderr, shown if
/// it does not exit.
fn wait_exit(child: &mut Child, limit: Duration, log: &std::path::Path) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, signal: &str) {
    assert!(
        std::process::Command::new("kill").args(["-s", signal, &child.id().to_string()]).status().unwrap().success()
    );
}

/// GET `path` from the daemon's metrics address.
fn http_get(address: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// A local address nothing listens on now.
fn free_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

#[test]
fn the_daemon_notifies_systemd_patches_reports_and_resumes_after_the_reboot() {
    let host = TestHost::start(Options::default());
    let metrics = free_address();
    host.merge_config(&format!(
        "[schedule]\ncheck_interval = \"2s\"\n[report]\nmetrics_listen = \"{metrics}\"\nwebhook_url = \"{}\"\n",
        host.standin["webhook_url"].as_str().unwrap()
    ));
    let notify = NotifySocket::new(&host);
    let socket = notify.path.to_str().unwrap().to_string();
    let env = [("NOTIFY_SOCKET", socket.as_str())];
    let mut daemon = host.spawn(&["daemon"], &env, "daemon-1");
    notify.wait_for("READY=1", Duration::from_secs(30));
    // STATUS= follows the cycle, with what it waits for.
    notify.wait_for("STATUS=cycle ", Duration::from_secs(30));
    notify.wait_for("draining: ", Duration::from_secs(60));
    // The reboot stand-in stops the daemon with SIGTERM, as systemd does at a reboot.
    let code = wait_exit(&mut daemon, Duration::from_secs(120), &host.path("daemon-1.stderr"));
    assert_eq!(code, 0, "a stop is not a failure: {}", std::fs::read_to_string(host.path("daemon-1.stderr")).unwrap());
    assert_eq!(host.reboots(), 1);
    assert_eq!(host.status()["step"], "rebooting");

    // After the boot, systemd starts the daemon again: it resumes at once.
    let mut daemon = host.spawn(&["daemon"], &env, "daemon-2");
    let deadline = Instant::now() + Duration::from_secs(90);
    while host.status()["cycle"]["state"]["step"] != "done" {
        assert!(Instant::now() < deadline, "never finished: {}", host.status());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_patched(&host);
    notify.wait_for("STATUS=idle: next check", Duration::from_secs(30));
    let status = host.status();
    assert!(status["daemon"]["activity"].as_str().unwrap().starts_with("idle: next check"), "{status}");
    assert!(status["daemon"]["next_check"].is_string(), "{status}");

    let events: Vec<Value> =
        host.control("webhooks", "{}").as_array().unwrap().iter().map(|w| w["body"].clone()).collect();
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["drain-started", "rebooting", "back-in-service"], "{events:#?}");
    for event in &events {
        assert_eq!(event["cluster"], "demo");
        assert_eq!(event["instance_id"], host.standin["instance_id"]);
        assert!(event["text"].as_str().unwrap().starts_with("ecs-patchd: "), "{event}");
    }
    let scraped = http_get(&metrics, "/metrics");
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    for line in ["ecs_patchd_step{step=\"idle\"} 1", "ecs_patchd_updates_pending 0", "ecs_patchd_lease_held 0"] {
        assert!(scraped.lines().any(|l| l == line), "{line} missing:\n{scraped}");
    }
    assert!(scraped.contains("ecs_patchd_last_success_timestamp_seconds "), "{scraped}");
    assert!(scraped.contains("ecs_patchd_out_of_service_seconds "), "{scraped}");

    // SIGHUP re-reads the configuration; a bad one is refused and the old one kept.
    host.merge_config("[schedule]\ncheck_interval = \"0s\"\n");
    signal(&daemon, "HUP");
    let log = host.path("daemon-2.stderr");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log).unwrap().contains("the configuration was not reloaded") {
        assert!(Instant::now() < deadline, "{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(std::fs::read_to_string(&log).unwrap().contains("schedule.check_interval"));
    // A good one takes effect: a window closed now sends the daemon to wait for it.
    host.merge_config(
        "[schedule]\ncheck_interval = \"2s\"\ntime_zone = \"Pacific/Kiritimati\"\nwindows = [{ days = [\"mon\"], start = \"00:00\", length = \"1m\" }]\n",
    );
    signal(&daemon, "HUP");
    notify.wait_for("idle: outside the maintenance window", Duration::from_secs(30));
    assert!(std::fs::read_to_string(&log).unwrap().contains("configuration reloaded"));
    signal(&daemon, "TERM");
    assert_eq!(wait_exit(&mut daemon, Duration::from_secs(20), &log), 0);
    notify.wait_for("STOPPING=1", Duration::from_secs(5));
}

/// A host whose daemon (configured with `config`) is installing, slowly, and a `run` with
/// `args` started then: the host, the daemon, the follower and the cycle's id.
fn follower_of_a_daemon_cycle(config: &str, args: &[&str]) -> (TestHost, Child, Child, String) {
    let host = TestHost::start(Options { scenario: "slow", ..Options::default() });
    host.merge_config(config);
    let daemon = host.spawn(&["daemon"], &[], "daemon");
    host.wait_for_step("installing");
    let cycle = host.status()["cycle"]["id"].as_str().unwrap().to_string();
    let follower = host.spawn(args, &[], "follower");
    (host, daemon, follower, cycle)
}

#[test]
fn run_follows_the_daemons_cycle_and_ends_with_it() {
    let (host, mut daemon, mut follower, cycle) =
        follower_of_a_daemon_cycle("[schedule]\ncheck_interval = \"1s\"\n", &["run"]);
    // The daemon reboots the host (and is stopped); the follower takes the journal over and
    // finishes the cycle it followed.
    assert_eq!(wait_exit(&mut daemon, Duration::from_secs(120), &host.path("daemon.stderr")), 0);
    let code = wait_exit(&mut follower, Duration::from_secs(120), &host.path("follower.stderr"));
    let stderr = std::fs::read_to_string(host.path("follower.stderr")).unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("following it until it ends"), "{stderr}");
    let stdout = std::fs::read_to_string(host.path("follower.stdout")).unwrap();
    assert!(stdout.contains(&format!("cycle {cycle}")), "the followed cycle: {stdout}");
    assert_patched(&host);
}

#[test]
fn run_reports_the_daemons_cycle_when_the_daemon_finishes_it() {
    // The daemon's next check comes at least 4.5 s after the cycle: the follower, looking
    // every half second, sees the cycle end before another takes its place.
    let (host, mut daemon, mut follower, cycle) = follower_of_a_daemon_cycle(
        "[schedule]\ncheck_interval = \"5s\"\n[packages]\nreboot = \"never\"\n",
        &["run", "--now"],
    );
    let code = wait_exit(&mut follower, Duration::from_secs(120), &host.path("follower.stderr"));
    let stderr = std::fs::read_to_string(host.path("follower.stderr")).unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("apply to a cycle this run starts"), "the flag is said to be moot: {stderr}");
    let stdout = std::fs::read_to_string(host.path("follower.stdout")).unwrap();
    assert!(stdout.contains(&format!("cycle {cycle}")) && stdout.contains("3 package(s) updated"), "{stdout}");
    assert_eq!(host.reboots(), 0);
    assert_eq!(host.record()["status"], "ACTIVE");
    signal(&daemon, "TERM");
    assert_eq!(wait_exit(&mut daemon, Duration::from_secs(30), &host.path("daemon.stderr")), 0);
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 1, "one cycle, not two");
}

#[test]
fn the_service_unit_passes_systemd_analyze_verify_and_keeps_its_promises() {
    let unit = std::fs::read_to_string(common::repo_path("systemd/ecs-patchd.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/ecs-patchd daemon",
        "After=network-online.target docker.service ecs.service",
        "Wants=network-online.target",
        "Restart=on-failure",
        "WatchdogSec=",
        "KillMode=mixed",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "the unit lacks {line:?}");
    }
    // Every unit shipped, verified by systemd itself (the binary's path made real here).
    let dir = tempfile::tempdir().unwrap();
    let units: Vec<_> = std::fs::read_dir(common::repo_path("systemd")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!units.is_empty());
    for unit in units {
        let text =
            std::fs::read_to_string(&unit).unwrap().replace("/usr/bin/ecs-patchd", env!("CARGO_BIN_EXE_ecs-patchd"));
        let copy = dir.path().join(unit.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .expect("systemd-analyze (scripts/setup.sh installs systemd)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}: {}",
            unit.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
