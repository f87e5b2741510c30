//! Bad input and unreachable parts: a clear error, the right exit code, nothing lost.

mod common;

use std::process::Command;

use common::{Options, Run, TestHost};

fn bare_run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ecs-patchd"));
    command.args(args).env_remove("ECS_PATCHD_CONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    Run::from(command.output().unwrap())
}

#[test]
fn bad_config_exits_78_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    for (text, key) in [
        ("[drain]\ntimeout = 30\n", "drain.timeout"),
        ("[drain]\ntimout = \"30m\"\n", "timout"),
        ("[packages]\nmanager = \"zypper\"\n", "packages.manager"),
        ("[host]\nreboot_command = []\n", "host.reboot_command"),
    ] {
        std::fs::write(&path, text).unwrap();
        let run = bare_run(&["--config", path.to_str().unwrap(), "run"], &[]);
        assert_eq!(run.code, 78, "{text}: {run:?}");
        assert!(run.stderr.contains(path.to_str().unwrap()), "names the file: {}", run.stderr);
        assert!(run.stderr.contains(key), "names the key {key}: {}", run.stderr);
    }
}

#[test]
fn corrupt_journal_is_reported_and_left_untouched() {
    let host = TestHost::start(Options::default());
    std::fs::create_dir_all(host.path("state")).unwrap();
    // The state directory as ecs-patchd makes it: root's alone.
    std::fs::set_permissions(host.path("state"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(host.journal_file(), "{\"id\": \"i-1\", \"state\": {\"step\": \"drai").unwrap();
    for args in [&["run"][..], &["status"][..]] {
        let run = host.run(args);
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert!(run.stderr.contains("is corrupt"), "{}", run.stderr);
        assert!(run.stderr.contains(host.journal_file().to_str().unwrap()), "{}", run.stderr);
    }
    assert_eq!(std::fs::read_to_string(host.journal_file()).unwrap(), "{\"id\": \"i-1\", \"state\": {\"step\": \"drai");
    assert_eq!(host.calls("PutAttributes") + host.calls("UpdateContainerInstancesState:DRAINING"), 0);
    assert_eq!(host.installed("demo-app"), "1.0");
}

#[test]
fn imds_down_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("[paths]\nstate_dir = \"{}\"\n", dir.path().join("state").display())).unwrap();
    let endpoint = format!("http://{closed}");
    let run = bare_run(
        &["--config", config.to_str().unwrap(), "run"],
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint), ("AWS_REGION", "us-east-1")],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!("cannot read the instance identity from IMDSv2 at {endpoint}")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("AWS_EC2_METADATA_SERVICE_ENDPOINT"), "says what to fix: {}", run.stderr);
}

#[test]
fn imds_token_refused_is_a_clear_error() {
    let host = TestHost::start(Options { imds_refuse_token: true, ..Options::default() });
    let run = host.run(&["check"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("cannot read the instance identity from IMDSv2"), "{}", run.stderr);
    assert!(run.stderr.contains("403") || run.stderr.to_lowercase().contains("forbidden"), "{}", run.stderr);
    for dump in ["headers", "Response {", "SdkBody"] {
        assert!(!run.stderr.contains(dump), "no Debug dump of the SDK's response ({dump}): {}", run.stderr);
    }
    assert_eq!(host.calls("DescribeContainerInstances"), 0);
}

#[test]
fn identity_falls_back_to_ecs_config_when_the_agent_is_down() {
    let host = TestHost::start(Options::default());
    host.control("agent/stop", "{}");
    let run = host.run(&["check", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let preview: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(preview["identity"]["container_instance_arn"], host.standin["container_instance_arn"]);
    assert_eq!(preview["identity"]["cluster"], "demo");
    assert_eq!(preview["identity"]["instance_id"], host.standin["instance_id"]);
}

#[test]
fn no_way_to_find_the_container_instance_explains_what_was_tried() {
    let host = TestHost::start(Options::default());
    host.control("agent/stop", "{}");
    std::fs::write(host.path("ecs.config"), "ECS_CLUSTER=elsewhere\n").unwrap();
    let run = host.run(&["run"]);
    assert_eq!(run.code, 1, "{run:?}");
    for part in ["cannot tell which ECS container instance", "did not answer", "cluster elsewhere", "identity.cluster"]
    {
        assert!(run.stderr.contains(part), "mentions {part:?}: {}", run.stderr);
    }
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0);
}

#[test]
fn a_config_others_may_write_is_refused_with_78() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[host]\nreboot_command = [\"/tmp/anyone-could-put-this-here\"]\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = bare_run(&["--config", path.to_str().unwrap(), "run"], &[]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains(&format!("{} is writable by everyone", path.display())), "{}", run.stderr);
    std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = bare_run(&["--config", path.to_str().unwrap(), "config"], &[]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("is owned by uid 65534, not by root"), "{}", run.stderr);
}

#[test]
fn credentials_in_the_fleetlock_url_never_appear() {
    let host = TestHost::start(Options {
        config: "[coordination]\nbackend = \"fleetlock\"\nfleetlock_url = \"http://patcher:s3cret@127.0.0.1:9\"\n\
                 wait_timeout = \"2s\"\n",
        ..Options::default()
    });
    let run = host.run(&["run"]);
    assert_eq!(run.code, 75, "no slot within the wait: not now, not failed: {run:?}");
    assert!(run.stderr.contains("FleetLock http://***@127.0.0.1:9/v1/pre-reboot"), "{}", run.stderr);
    let config = host.run(&["config"]);
    for out in [&run.stdout, &run.stderr, &config.stdout, &config.stderr] {
        assert!(!out.contains("s3cret"), "a password in the output: {out}");
    }
}

#[test]
fn a_lease_table_that_does_not_exist_stops_run_check_and_the_daemon_at_once() {
    let host = TestHost::start(Options {
        standin_args: &["--lease-table", "leases"],
        config: "[coordination]\nbackend = \"dynamodb\"\ndynamodb_table = \"no-such-table\"\n",
        ..Options::default()
    });
    let textfile = host.path("ecs_patchd.prom");
    host.merge_config(&format!("[report]\nmetrics_textfile = \"{}\"\n", textfile.display()));
    let run = host.run(&["run"]);
    assert_eq!(run.code, 78, "a setup error, not a temporary one: {run:?}");
    assert!(run.stderr.contains("ResourceNotFoundException"), "{}", run.stderr);
    assert!(run.stderr.contains("create it as the operator guide's \"First install\" says"), "{}", run.stderr);
    assert!(!run.stderr.contains("will try again"), "not retried: {}", run.stderr);
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0);
    assert_eq!(host.installed("demo-app"), "1.0");
    assert!(std::fs::read_to_string(&textfile).unwrap().contains("ecs_patchd_setup_error 1"));

    let check = host.run(&["check", "--json"]);
    assert_eq!(check.code, 78, "{check:?}");
    let preview: serde_json::Value = serde_json::from_str(&check.stdout).unwrap();
    assert!(preview["setup_problems"][0].as_str().unwrap().contains("no-such-table"), "{preview}");
    assert!(preview["verdict"].as_str().unwrap().starts_with("nothing until the setup is fixed"), "{preview}");

    // The daemon stops too (exit 78, which the unit does not restart), having said so once.
    host.merge_config("[schedule]\ncheck_interval = \"1s\"\n");
    let mut daemon = host.spawn(&["daemon"], &[], "daemon");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the daemon is still running");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(host.path("daemon.stderr")).unwrap();
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("the daemon stops on a mistake in the setup"), "{stderr}");
    assert_eq!(stderr.matches("ResourceNotFoundException").count(), 3, "the step, the outcome, the exit: {stderr}");

    // Fixed, the same host patches.
    host.merge_config("[coordination]\ndynamodb_table = \"leases\"\n");
    host.run_to_success("fixed");
    assert!(std::fs::read_to_string(&textfile).unwrap().contains("ecs_patchd_setup_error 0"));
}
