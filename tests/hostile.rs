//! A hostile neighbour, against the real binary, moto, the stand-in IMDS and agent, and real
//! dnf: a process that answers on the agent's port, a peer that forges lease items, a user
//! who feeds the configuration through a pipe or swaps a hook folder, a link planted in the
//! state directory, a flood of connections on the metrics port. Each is refused with a clear
//! error, and the host stays ACTIVE (or finishes its cycle).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Options, TestHost};

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The uid of `nobody`, who owns what a careless file mode exposes.
const NOBODY: u32 = 65534;

#[test]
fn a_configuration_fed_through_a_pipe_is_refused_and_its_commands_never_run() {
    let host = TestHost::start(Options::default());
    let ran = host.path("owned");
    let forged = std::fs::read_to_string(host.config_path())
        .unwrap()
        .replace("[host]\n", &format!("[host]\nreboot_command = [\"/bin/sh\", \"-c\", \"touch {}\"]\n", ran.display()));
    let fifo = host.path("config.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    std::os::unix::fs::chown(&fifo, Some(NOBODY), Some(NOBODY)).unwrap();
    // A writer that feeds the pipe as long as anyone reads it (it gives up after 20 s).
    let writer = std::process::Command::new("timeout")
        .args(["20", "sh", "-c", "while :; do printf '%s' \"$1\" > \"$2\"; done", "feed", &forged])
        .arg(&fifo)
        .spawn()
        .unwrap();
    let fifo_arg = fifo.to_string_lossy().into_owned();
    let run = host.run(&["--config", &fifo_arg, "run"]);
    // SIGTERM, which `timeout` passes on to the shell waiting on the pipe.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(writer.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut writer = writer;
    writer.wait().unwrap();
    assert_eq!(run.code, 78, "a setup error: {run:?}");
    assert!(run.stderr.contains("config.fifo is not a regular file"), "{}", run.stderr);
    assert!(!ran.exists(), "the pipe's reboot_command never runs");
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0);
    // Through /dev/stdin the same: a pipe, whatever its name.
    let mut piped = std::process::Command::new(env!("CARGO_BIN_EXE_ecs-patchd"))
        .args(["--config", "/dev/stdin", "run"])
        .envs(host.env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = piped.stdin.take().unwrap();
    let feeding = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(forged.as_bytes());
    });
    let out = piped.wait_with_output().unwrap();
    feeding.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("/dev/stdin is not a regular file"), "{stderr}");
    assert!(!ran.exists(), "the pipe's reboot_command never runs");
}

#[test]
fn a_hook_folder_under_a_directory_others_may_write_is_refused_before_the_drain() {
    let host = TestHost::start(Options::default());
    let shared = host.path("shared");
    let point = shared.join("hooks.d/pre-drain");
    std::fs::create_dir_all(&point).unwrap();
    let ran = host.path("hook-ran");
    let hook = point.join("10-check");
    std::fs::write(&hook, format!("#!/bin/sh\ntouch {}\n", ran.display())).unwrap();
    chmod(&hook, 0o755);
    chmod(&point, 0o755);
    chmod(&shared.join("hooks.d"), 0o755);
    // Anyone may rename hooks.d away and put their own in its place.
    chmod(&shared, 0o777);
    host.merge_config(&format!("[hooks]\ndir = \"{}\"\n", shared.join("hooks.d").display()));
    let run = host.run(&["run"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("shared is writable by everyone") || run.stderr.contains("shared is writable by everyone"),
        "{run:?}"
    );
    assert!(!ran.exists(), "the hook never runs");
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0, "no drain");
    assert_eq!(host.record()["status"], "ACTIVE");
    // Closed again, the same hook runs and the cycle goes on.
    chmod(&shared, 0o755);
    let runs = host.run_to_end();
    assert_eq!(runs.last().unwrap().code, 0, "{runs:?}");
    assert!(ran.exists(), "the hook ran once its parents were root's alone");
}

#[test]
fn a_link_planted_as_the_lock_overwrites_nothing_and_an_open_state_dir_is_refused() {
    let host = TestHost::start(Options::default());
    let state = host.path("state");
    std::fs::create_dir(&state).unwrap();
    chmod(&state, 0o700);
    let victim = host.path("victim");
    std::fs::write(&victim, "root's file\n").unwrap();
    std::os::unix::fs::symlink(&victim, state.join("lock")).unwrap();
    let run = host.run(&["run"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("cannot open the lock file"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's file\n", "nothing written through the link");
    std::fs::remove_file(state.join("lock")).unwrap();
    chmod(&state, 0o755);
    let open = host.run(&["run"]);
    assert_eq!(open.code, 78, "{open:?}");
    assert!(open.stderr.contains("key `paths.state_dir`") && open.stderr.contains("chmod 700"), "{}", open.stderr);
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0);
}

/// The first container instance of the cluster that is not `host`'s.
fn peer_arn(host: &TestHost) -> (String, String) {
    let own = host.standin["instance_id"].as_str().unwrap();
    let peer =
        host.ecs()["instances"].as_array().unwrap().iter().find(|i| i["ec2_instance_id"] != own).cloned().unwrap();
    (peer["arn"].as_str().unwrap().to_string(), peer["ec2_instance_id"].as_str().unwrap().to_string())
}

/// The record `arn` as the stand-in holds it.
fn record_of(host: &TestHost, arn: &str) -> serde_json::Value {
    host.ecs()["instances"].as_array().unwrap().iter().find(|i| i["arn"] == arn).cloned().unwrap()
}

#[test]
fn an_agent_port_that_names_another_host_is_refused_before_anything_changes() {
    let host = TestHost::start(Options::default());
    let own = host.standin["instance_id"].as_str().unwrap().to_string();
    let (peer, peer_instance) = peer_arn(&host);
    host.control("agent/lie", &serde_json::json!({"host": 0, "arn": peer}).to_string());
    let run = host.run(&["run"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(&peer_instance) && run.stderr.contains(&own), "both ids named: {}", run.stderr);
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0, "nothing drained");
    assert_eq!(record_of(&host, &peer)["status"], "ACTIVE");
    assert_eq!(record_of(&host, &peer)["attributes"], serde_json::json!({}), "no mark on the peer");
    assert_eq!(host.installed("demo-app"), "1.0", "nothing installed");
    // A body of any size is read no further than its bound; the host is found through ECS.
    host.control("agent/lie", &serde_json::json!({"host": 0, "pad": 3 << 20}).to_string());
    let check = host.run(&["check", "--json"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(check.stderr.contains("sent an answer larger than 1048576 bytes"), "{}", check.stderr);
    let preview: serde_json::Value = serde_json::from_str(&check.stdout).unwrap();
    assert_eq!(preview["identity"]["container_instance_arn"], host.standin["container_instance_arn"], "{preview}");
}

#[test]
fn an_agent_port_taken_during_the_reboot_is_refused_and_the_host_returns_to_service() {
    let host = TestHost::start(Options::default());
    let own = host.standin["instance_id"].as_str().unwrap().to_string();
    let (peer, peer_instance) = peer_arn(&host);
    host.control("agent/lie", &serde_json::json!({"host": 0, "arn": peer, "from_next_start": true}).to_string());
    let runs = host.run_to_end();
    let last = runs.last().unwrap();
    assert_eq!(last.code, 1, "the cycle fails: {runs:#?}");
    assert!(last.stderr.contains(&peer_instance) && last.stderr.contains(&own), "{}", last.stderr);
    assert_eq!(host.reboots(), 1);
    assert_eq!(host.record()["status"], "ACTIVE", "its own instance is back in service");
    assert_eq!(record_of(&host, &peer)["status"], "ACTIVE");
    assert_eq!(record_of(&host, &peer)["attributes"], serde_json::json!({}), "no mark on the peer");
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 1, "its own drain only");
}

#[test]
fn a_forged_control_item_is_refused_by_name_and_status_still_shows_the_rest() {
    let host = TestHost::start(Options::dynamodb_leases());
    let forged = serde_json::json!({
        "format": 2, "paused": null, "served": 0, "next_token": 1, "slots": u64::MAX,
        "cluster_size": 3, "snapshot_not_before": 0,
    });
    host.control("lease/put", &serde_json::json!({"key": "demo/default", "body": forged.to_string()}).to_string());
    let run = host.run(&["run"]);
    assert_eq!(run.code, 78, "an error for an operator, not an abort: {run:?}");
    assert!(
        run.stderr.contains(
            "the lease item demo/default in DynamoDB table leases is refused: field `slots` is 18446744073709551615"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0);
    assert_eq!(host.record()["status"], "ACTIVE");
    let status = host.run(&["fleet", "status"]);
    assert_eq!(status.code, 1, "the store needs a look: {status:?}");
    assert!(status.stdout.contains("UNREADABLE the lease item demo/default"), "{}", status.stdout);
    let own = host.standin["instance_id"].as_str().unwrap();
    assert!(status.stdout.contains(own), "the instances are still listed: {}", status.stdout);
}

#[test]
fn a_peer_that_clears_the_pause_in_the_control_item_does_not_resume_the_roll() {
    let host = TestHost::start(Options::dynamodb_leases());
    let pause = host.run(&["fleet", "pause", "--reason", "change freeze"]);
    assert_eq!(pause.code, 0, "{pause:?}");
    // A compromised peer rewrites the control item (every host's role may) without the pause.
    let status = host.run(&["fleet", "status", "--json"]);
    let mut control = serde_json::from_str::<serde_json::Value>(&status.stdout).unwrap()["group"]["control"].clone();
    assert_eq!(control["paused"]["reason"], "change freeze", "{control}");
    control["paused"] = serde_json::Value::Null;
    host.control("lease/put", &serde_json::json!({"key": "demo/default", "body": control.to_string()}).to_string());
    let run = host.run(&["run"]);
    assert_eq!(run.code, 75, "still paused: {run:?}");
    assert!(run.stdout.contains("change freeze"), "{}", run.stdout);
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0);
    let status = host.run(&["fleet", "status"]);
    assert!(status.stdout.contains("paused     YES"), "{}", status.stdout);
    // The operator's resume writes what no host's role may write, and the roll goes on.
    let resume = host.run(&["fleet", "resume"]);
    assert!(resume.stdout.contains("resumed"), "{resume:?}");
    host.run_to_success("resumed by the operator");
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 1);
}

/// Opens 1,100 connections to the address in argv[1] at once (those the listener's backlog
/// does not take yet keep trying), says how many are established a second later, and holds
/// them all until its stdin closes.
const FLOOD: &str = r#"
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
host, port = sys.argv[1].rsplit(":", 1)
held = []
for _ in range(1100):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((host, int(port)))
    held.append(s)
time.sleep(1)
def established(s):
    try:
        s.getpeername()
        return True
    except OSError:
        return False
print(sum(map(established, held)), flush=True)
sys.stdin.read()
"#;

/// A local address nothing listens on now.
fn free_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

#[test]
fn a_flood_of_idle_connections_on_the_metrics_port_does_not_stall_the_drain() {
    use std::time::{Duration, Instant};
    // Tasks that linger in DEACTIVATING: the drain lasts long enough to be flooded.
    let host = TestHost::start(Options { standin_args: &["--deactivating-seconds", "4"], ..Options::default() });
    let metrics = free_address();
    host.merge_config(&format!("[schedule]\ncheck_interval = \"1s\"\n[report]\nmetrics_listen = \"{metrics}\"\n"));
    // The daemon under systemd's default limit of 1,024 open files.
    let err = std::fs::File::create(host.path("daemon.stderr")).unwrap();
    let mut daemon = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 1024 && exec \"$0\" daemon", env!("CARGO_BIN_EXE_ecs-patchd")])
        .envs(host.env())
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(host.path("daemon.stderr")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log().contains("draining") {
        assert!(Instant::now() < deadline, "the drain never began:\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // 1,100 connections that never send a byte, held through the drain (by a helper that
    // may open more files than this test).
    let mut flood = std::process::Command::new("python3")
        .args(["-c", FLOOD, &metrics])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut opened = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(flood.stdout.take().unwrap()), &mut opened).unwrap();
    let established: usize = opened.trim().parse().unwrap();
    assert!(established > 0, "the flood reached the port");
    // The reboot stand-in stops the daemon with SIGTERM once the drain and install are done.
    let deadline = Instant::now() + Duration::from_secs(120);
    let code = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the cycle stalled under the flood:\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(flood.stdin.take());
    flood.wait().unwrap();
    assert_eq!(code, Some(0), "{}", log());
    assert_eq!(host.reboots(), 1, "drained, installed and rebooted under the flood");
    assert!(log().matches("cannot accept").count() <= 1, "no storm of accept errors:\n{}", log());
    let runs = host.run_to_end();
    assert_eq!(runs.last().unwrap().code, 0, "{runs:#?}");
    common::assert_patched(&host);
}
