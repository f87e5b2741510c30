//! A simulated EC2 host for integration tests: a throwaway package root, the AWS/IMDS/agent
//! stand-ins on 127.0.0.1 (tests/standins/prepare-host.sh), and the real binary run against
//! them with a configuration confined to a temporary directory.

#![allow(dead_code)] // each test binary uses part of this harness

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// Exit status of a process killed by SIGKILL, as the shell reports it.
pub const KILLED: i32 = 137;
/// Exit status of a run stopped by a signal between two steps (the next run resumes).
pub const STOPPED: i32 = 75;

/// What a test host starts with.
pub struct Options<'a> {
    /// "dnf" or "apt".
    pub manager: &'a str,
    /// make-root.sh scenario (full, agent-only, userland, runtime, security, release, ...).
    pub scenario: &'a str,
    /// Service tasks on the host.
    pub tasks: u32,
    /// Standalone tasks on the host.
    pub standalone_tasks: u32,
    /// The IMDS stand-in refuses tokens.
    pub imds_refuse_token: bool,
    /// TOML merged over the generated configuration.
    pub config: &'a str,
    /// Run a FleetLock stand-in with this many slots (0: none).
    pub fleetlock_slots: u32,
    /// More aws_standin.py options (e.g. `--asg`, `--deactivating-seconds`).
    pub standin_args: &'a [&'a str],
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            manager: "dnf",
            scenario: "full",
            tasks: 3,
            standalone_tasks: 0,
            imds_refuse_token: false,
            config: "",
            fleetlock_slots: 0,
            standin_args: &[],
        }
    }
}

impl Options<'_> {
    /// The defaults, with a DynamoDB lease table `leases` in the stand-in and the daemon's
    /// coordination through it.
    pub fn dynamodb_leases() -> Self {
        Self {
            standin_args: &["--lease-table", "leases"],
            config: "[coordination]\nbackend = \"dynamodb\"\ndynamodb_table = \"leases\"\n",
            ..Self::default()
        }
    }
}

/// One simulated host; stand-ins it started itself stop when it is dropped.
pub struct TestHost {
    pub dir: tempfile::TempDir,
    pub manager: String,
    /// The stand-ins' addresses, with this host's own (instance id, ARN, IMDS, agent) on top.
    pub standin: Value,
    /// Its index among the stand-ins' hosts.
    pub index: usize,
    env: Vec<(String, String)>,
}

/// Several hosts sharing one set of stand-ins (one cluster, one lease table).
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub hosts: Vec<TestHost>,
}

impl Fleet {
    /// Starts stand-ins with `standin_args` for `count` hosts, each configured for
    /// `manager`/`scenario` with `config` merged over its configuration.
    pub fn start(count: usize, standin_args: &[&str], manager: &str, scenario: &str, config: &str) -> Self {
        let dir = tempdir();
        let out = Command::new(repo().join("tests/standins/start-standins.sh"))
            .arg(dir.path())
            .args(["--hosts", &count.to_string()])
            .args(standin_args)
            .env("STANDIN_PYTHON", python())
            .output()
            .unwrap();
        assert!(out.status.success(), "start-standins.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let state = dir.path().join("standin.json");
        let hosts =
            (0..count).map(|index| TestHost::configure(tempdir(), &state, index, manager, scenario, config)).collect();
        Self { dir, hosts }
    }

    /// Posts to the stand-ins' control API.
    pub fn control(&self, path: &str, body: &str) -> Value {
        self.hosts[0].control(path, body)
    }

    /// The lease table's items, by key.
    pub fn lease(&self) -> Value {
        self.control("lease", "{}")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        stop_standins(self.dir.path());
    }
}

/// Stops the stand-ins started in `dir`, if any were.
fn stop_standins(dir: &std::path::Path) {
    if let Ok(pid) = std::fs::read_to_string(dir.join("standin.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
}

/// A fresh random id, as /proc/sys/kernel/random/uuid gives.
fn uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap().trim().to_string()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ecs-patchd-test.").tempdir().unwrap()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    repo().join(relative)
}

/// Every `.rs` file under `dir`, recursively, appended to `into`.
pub fn rust_files(dir: &std::path::Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The python that has moto.
pub fn python() -> PathBuf {
    let path = std::env::var_os("ECS_PATCHD_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    assert!(
        path.exists(),
        "no python with moto at {}: run scripts/test.sh (it installs the test dependencies)",
        path.display()
    );
    path
}

impl TestHost {
    pub fn start(options: Options<'_>) -> Self {
        let dir = tempdir();
        let mut args = vec![
            "--tasks".to_string(),
            options.tasks.to_string(),
            "--standalone-tasks".to_string(),
            options.standalone_tasks.to_string(),
        ];
        if options.imds_refuse_token {
            args.push("--imds-refuse-token".into());
        }
        if options.fleetlock_slots > 0 {
            args.extend(["--fleetlock-slots".to_string(), options.fleetlock_slots.to_string()]);
        }
        args.extend(options.standin_args.iter().map(|a| a.to_string()));
        let out = Command::new(repo().join("tests/standins/start-standins.sh"))
            .arg(dir.path())
            .args(&args)
            .env("STANDIN_PYTHON", python())
            .output()
            .unwrap();
        assert!(out.status.success(), "start-standins.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let state = dir.path().join("standin.json");
        Self::configure(dir, &state, 0, options.manager, options.scenario, options.config)
    }

    /// Configures host `index` of running stand-ins (described in `state`) in `dir`.
    fn configure(
        dir: tempfile::TempDir,
        state: &std::path::Path,
        index: usize,
        manager: &str,
        scenario: &str,
        config: &str,
    ) -> Self {
        let out = Command::new(repo().join("tests/standins/configure-host.sh"))
            .arg(dir.path())
            .arg(state)
            .arg(index.to_string())
            .arg(manager)
            .arg(scenario)
            .output()
            .unwrap();
        assert!(out.status.success(), "configure-host.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let mut standin: Value = serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
        let own = standin["hosts"][index].clone();
        for (k, v) in own.as_object().unwrap() {
            standin[k] = v.clone();
        }
        let env = std::fs::read_to_string(dir.path().join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let host = Self { dir, manager: manager.to_string(), standin, index, env };
        if !config.is_empty() {
            host.merge_config(config);
        }
        host
    }

    /// Posts `path` to the control API on behalf of this host.
    pub fn host_control(&self, path: &str) -> Value {
        self.control(path, &format!("{{\"host\": {}}}", self.index))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("config.toml")
    }

    /// The host's configuration as written.
    pub fn config(&self) -> toml::Table {
        std::fs::read_to_string(self.config_path()).unwrap().parse().unwrap()
    }

    /// The variables that point the binary at this host's stand-ins.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }

    /// Merges `overrides` (TOML) over the host's configuration, table by table.
    pub fn merge_config(&self, overrides: &str) {
        fn merge(into: &mut toml::Table, from: toml::Table) {
            for (k, v) in from {
                match (into.get_mut(&k), v) {
                    (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                    (_, v) => {
                        into.insert(k, v);
                    }
                }
            }
        }
        let mut config = self.config();
        merge(&mut config, overrides.parse().expect("test overrides are TOML"));
        std::fs::write(self.config_path(), toml::to_string(&config).unwrap()).unwrap();
    }

    /// Removes `key` from table `table` of the host's configuration: its default applies.
    pub fn unset_config(&self, table: &str, key: &str) {
        let mut config = self.config();
        config.get_mut(table).and_then(toml::Value::as_table_mut).map(|t| t.remove(key));
        std::fs::write(self.config_path(), toml::to_string(&config).unwrap()).unwrap();
    }

    /// The requests the SSM stand-in received for `operation`, newest first.
    pub fn ssm_requests(&self, operation: &str) -> Vec<Value> {
        let all = self.control("ssm", "{}");
        all.as_array()
            .unwrap()
            .iter()
            .rev()
            .filter(|r| r["operation"] == operation)
            .map(|r| r["body"].clone())
            .collect()
    }

    /// Runs the binary once with `args` (the host's configuration comes from the environment).
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    pub fn run_with(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ecs-patchd"));
        command.args(args).env_remove("AWS_PROFILE").env_remove("ECS_PATCHD_FAULT_KILL");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        for (k, v) in extra_env {
            command.env(k, v);
        }
        Run::from(command.output().unwrap())
    }

    /// Runs `ecs-patchd run` again after every reboot or injected crash, as the resume unit
    /// would at boot, until a run ends on its own. Returns every run.
    pub fn run_to_end(&self) -> Vec<Run> {
        self.run_to_end_with(&[])
    }

    /// [`TestHost::run_to_end`] with `extra_env` for every run.
    pub fn run_to_end_with(&self, extra_env: &[(&str, &str)]) -> Vec<Run> {
        let mut runs = Vec::new();
        for _ in 0..6 {
            let run = self.run_with(&["run"], extra_env);
            let again = run.rebooted();
            runs.push(run);
            if !again {
                return runs;
            }
        }
        panic!("still being killed after 6 runs: {:#?}", runs.last());
    }

    /// [`TestHost::run_to_end`], asserting that the last run succeeded; `label` names the
    /// case in the failure message.
    pub fn run_to_success(&self, label: &str) -> Vec<Run> {
        let runs = self.run_to_end();
        assert_eq!(runs.last().unwrap().code, 0, "{label}: {runs:#?}");
        runs
    }

    /// The cluster as the stand-in sees it, plus ECS call counts.
    pub fn ecs(&self) -> Value {
        self.control("state", "{}")
    }

    pub fn control(&self, path: &str, body: &str) -> Value {
        let out = Command::new(python())
            .arg(repo().join("tests/standins/standin_ctl.py"))
            .arg(self.standin["moto_url"].as_str().unwrap())
            .arg(path)
            .arg(body)
            .output()
            .unwrap();
        if !out.status.success() {
            // The stand-ins' own log says why (it is in this host's folder when it started them).
            let log = std::fs::read_to_string(self.path("standin.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
            panic!(
                "control {path} failed:\n{}\nstand-in log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                tail.join("\n")
            );
        }
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Every container-instance record of this host's EC2 instance.
    pub fn records(&self) -> Vec<Value> {
        let id = self.standin["instance_id"].as_str().unwrap();
        self.ecs()["instances"].as_array().unwrap().iter().filter(|i| i["ec2_instance_id"] == id).cloned().collect()
    }

    /// The record this host started with.
    pub fn record(&self) -> Value {
        let arn = self.standin["container_instance_arn"].as_str().unwrap();
        self.ecs()["instances"].as_array().unwrap().iter().find(|i| i["arn"] == arn).cloned().expect("record exists")
    }

    /// How many times the ECS API received `operation` (e.g. "UpdateContainerInstancesState:DRAINING").
    pub fn calls(&self, operation: &str) -> u64 {
        self.ecs()["calls"][operation].as_u64().unwrap_or(0)
    }

    /// Tasks running on the other hosts of the cluster.
    pub fn tasks_on_peers(&self) -> u64 {
        let id = self.standin["instance_id"].as_str().unwrap();
        self.ecs()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["ec2_instance_id"] != id)
            .map(|i| i["running_tasks"].as_u64().unwrap())
            .sum()
    }

    /// `status --json`.
    pub fn status(&self) -> Value {
        let run = self.run(&["status", "--json"]);
        assert_eq!(run.code, 0, "{run:?}");
        serde_json::from_str(&run.stdout).unwrap()
    }

    /// Spawns `ecs-patchd run` in the background, its output in files of the host's folder.
    pub fn spawn_run(&self) -> std::process::Child {
        self.spawn(&["run"], &[], "run")
    }

    /// Spawns the binary with `args` in the background, its output in `NAME.stdout` and
    /// `NAME.stderr` of the host's folder.
    pub fn spawn(&self, args: &[&str], extra_env: &[(&str, &str)], name: &str) -> std::process::Child {
        let out = std::fs::File::create(self.path(&format!("{name}.stdout"))).unwrap();
        let err = std::fs::File::create(self.path(&format!("{name}.stderr"))).unwrap();
        Command::new(env!("CARGO_BIN_EXE_ecs-patchd"))
            .args(args)
            .env_remove("AWS_PROFILE")
            .env_remove("ECS_PATCHD_FAULT_KILL")
            .envs(self.env())
            .envs(extra_env.iter().copied())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap()
    }

    /// Runs `program` with `args` and the host's environment, the binary's directory first
    /// on PATH (as an installed ecs-patchd would be).
    pub fn run_program(&self, program: &str, args: &[&str], extra_env: &[(&str, &str)]) -> Run {
        let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_ecs-patchd")).parent().unwrap().to_path_buf();
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let output = Command::new(program)
            .args(args)
            .env_remove("AWS_PROFILE")
            .env_remove("ECS_PATCHD_FAULT_KILL")
            .envs(self.env())
            .envs(extra_env.iter().copied())
            .env("PATH", path)
            .output()
            .unwrap();
        Run::from(output)
    }

    /// What a reboot does to the host, without stopping anyone: a new boot id, and the ECS
    /// agent down until it is started (the SSM agent reboots a host whose command exited 194).
    pub fn boot(&self) {
        std::fs::write(self.path("boot_id"), format!("{}\n", uuid())).unwrap();
        self.host_control("reboot");
    }

    /// Waits (up to a minute) until `status --json` shows `step`.
    pub fn wait_for_step(&self, step: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.status()["step"] != step {
            assert!(std::time::Instant::now() < deadline, "never reached {step}: {}", self.status());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Waits (up to a minute) until a package script runs inside this host's root: the
    /// package transaction is under way (a process whose root directory is the host's root).
    pub fn wait_for_scriptlet(&self) {
        let root = self.root().canonicalize().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let chrooted = std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok())
                .any(|e| std::fs::read_link(e.path().join("root")).is_ok_and(|r| r == root));
            if chrooted {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "no package script ever ran in {}", root.display());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// How many reboots the reboot stand-in performed.
    pub fn reboots(&self) -> usize {
        std::fs::read_to_string(self.path("boot_id.reboots")).map(|s| s.lines().count()).unwrap_or(0)
    }

    fn root(&self) -> PathBuf {
        self.path("pkg/root")
    }

    /// The installed version of `package` in the throwaway root.
    /// Has every later command write the metrics textfile (`report.metrics_textfile`), and
    /// answers its path.
    pub fn metrics_textfile(&self) -> PathBuf {
        let path = self.path("ecs_patchd.prom");
        self.merge_config(&format!("[report]\nmetrics_textfile = \"{}\"\n", path.display()));
        path
    }

    pub fn installed(&self, package: &str) -> String {
        let root = self.root();
        let out = if self.manager == "dnf" {
            Command::new("rpm")
                .arg(format!("--root={}", root.display()))
                .args(["-q", "--qf", "%{VERSION}", package])
                .output()
        } else {
            Command::new("dpkg-query")
                .arg(format!("--admindir={}/var/lib/dpkg", root.display()))
                .args(["-W", "-f=${Version}", package])
                .output()
        }
        .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The ECS agent's package on this host's family, as real hosts name it.
    pub fn agent_package(&self) -> &'static str {
        if self.manager == "dnf" { "ecs-init" } else { "amazon-ecs-init" }
    }

    /// `check --json`, parsed.
    pub fn check_json(&self) -> Value {
        let run = self.run(&["check", "--json"]);
        assert_eq!(run.code, 0, "{run:?}");
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
    }

    /// The steps the journal's cycle went through.
    pub fn steps(&self) -> Vec<String> {
        let status = self.status();
        status["cycle"]["history"].as_array().unwrap().iter().map(|m| m["step"].as_str().unwrap().to_string()).collect()
    }

    /// How many times the container runtime was restarted.
    pub fn runtime_restarts(&self) -> usize {
        std::fs::read_to_string(self.path("runtime.restarts")).map(|s| s.lines().count()).unwrap_or(0)
    }

    /// How many times the package manager upgraded `package` (from its own log).
    pub fn upgrades(&self, package: &str) -> usize {
        let (log, needle) = if self.manager == "dnf" {
            (self.root().join("var/log/dnf.rpm.log"), format!("Upgrade: {package}-"))
        } else {
            (self.root().join("var/log/dpkg.log"), format!(" upgrade {package}:"))
        };
        std::fs::read_to_string(&log).unwrap_or_default().lines().filter(|l| l.contains(&needle)).count()
    }

    /// When the journal's cycle entered `step`.
    pub fn step_began(&self, step: &str) -> std::time::SystemTime {
        let status = self.status();
        let at = status["cycle"]["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["step"] == step)
            .unwrap_or_else(|| panic!("no {step} in {status}"))["at"]
            .as_str()
            .unwrap()
            .to_string();
        humantime::parse_rfc3339(&at).unwrap()
    }

    pub fn journal_file(&self) -> PathBuf {
        self.path("state/cycle.json")
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        stop_standins(self.dir.path());
    }
}

/// One finished run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// True when the run ended because the machine went down under it: killed (an injected
    /// crash), or stopped by the SIGTERM the reboot stand-in sends after `systemctl reboot`
    /// returned, as systemd does.
    pub fn rebooted(&self) -> bool {
        self.code == KILLED || (self.code == STOPPED && self.stderr.contains("stopped by SIGTERM"))
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        use std::os::unix::process::ExitStatusExt;
        let code = out.status.code().unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
        Self {
            code,
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }
}

/// Asserts that the host's lease item (DynamoDB) has no holder, no queue and no pause, and
/// granted exactly one slot ever; `label` names the case in the failure message.
pub fn assert_one_slot_released(host: &TestHost, label: &str) {
    let item = &host.control("lease", "{}")["demo/default"];
    assert_eq!(item["holders"], serde_json::json!([]), "{label}: the slot is released: {item}");
    assert_eq!(item["queue"], serde_json::json!([]), "{label}: {item}");
    assert!(item["paused"].is_null(), "{label}: {item}");
    assert_eq!(item["control"]["next_token"], 2, "{label}: exactly one slot was ever granted: {item}");
}

/// The value of metric `name` in the host's textfile (`TestHost::metrics_textfile`).
pub fn metric(host: &TestHost, name: &str) -> String {
    let text = std::fs::read_to_string(host.path("ecs_patchd.prom")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .to_string()
}

/// Asserts the host ended a successful cycle: ACTIVE, v2 everywhere, tasks moved, one
/// reboot, one drain, one upgrade per package, no mark left behind.
pub fn assert_patched(host: &TestHost) {
    let record = host.record();
    assert_eq!(record["status"], "ACTIVE", "{record}");
    assert_eq!(record["attributes"], serde_json::json!({}), "the drained-by mark is removed");
    assert_eq!(host.installed("demo-app"), "2.0");
    assert_eq!(host.installed("demo-kernel"), "2.0");
    assert_eq!(host.installed(host.agent_package()), "1.1.0");
    for package in ["demo-app", "demo-kernel", host.agent_package()] {
        assert_eq!(host.upgrades(package), 1, "{package} upgraded exactly once");
    }
    assert_eq!(host.reboots(), 1, "exactly one reboot");
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 1, "drained exactly once");
    assert_eq!(host.calls("DeleteAttributes:with-value"), 0, "the mark is deleted by name and target only");
    assert_eq!(host.tasks_on_peers(), 3, "the service tasks moved to the peer");
    let status = host.status();
    assert_eq!(status["cycle"]["state"]["outcome"]["result"], "patched", "{status}");
    assert_eq!(status["cycle"]["state"]["outcome"]["rebooted"], true, "{status}");
}

/// Debian's libfaketime (multi-threaded build), which scripts/setup.sh installs.
pub fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists());
    found.expect("libfaketime is not installed: scripts/setup.sh installs it").display().to_string()
}

/// The environment of a run whose wall clock is `offset` off (libfaketime's "+30d", "-20m")
/// and whose monotonic clock is the system's.
pub fn wall_clock_off(offset: &str) -> Vec<(&'static str, String)> {
    vec![
        ("LD_PRELOAD", libfaketime()),
        ("FAKETIME", offset.to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ]
}

/// `env` borrowed, as [`TestHost::run_with`] takes it.
pub fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The English day name of a `YYYY-MM-DD` date (Zeller's congruence, for the test only).
pub fn day_of_week(date: &str) -> &'static str {
    let (y, m, d): (i64, i64, i64) =
        (date[..4].parse().unwrap(), date[5..7].parse().unwrap(), date[8..10].parse().unwrap());
    let (y, m) = if m < 3 { (y - 1, m + 12) } else { (y, m) };
    let h = (d + 13 * (m + 1) / 5 + y + y / 4 - y / 100 + y / 400) % 7; // 0 = Saturday
    ["sat", "sun", "mon", "tue", "wed", "thu", "fri"][h as usize]
}
