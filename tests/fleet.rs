//! Several real binaries sharing one cluster and one lease: DynamoDB (on moto) and FleetLock.

mod common;

use common::{Fleet, KILLED, Options, TestHost, borrowed, wall_clock_off};
use serde_json::Value;

const LEASE_KEY: &str = "demo/default";

fn dynamodb_config(max_unavailable: u32, on_stale: &str, ttl: &str) -> String {
    format!(
        "[coordination]\nbackend = \"dynamodb\"\ndynamodb_table = \"ecs-patchd-leases\"\nmax_unavailable = {max_unavailable}\n\
         on_stale_lease = \"{on_stale}\"\nlease_ttl = \"{ttl}\"\nsettle = \"1s\"\npoll = \"300ms\"\nsnapshot_max_age = \"1s\"\n"
    )
}

fn fleet(hosts: usize, config: &str) -> Fleet {
    Fleet::start(hosts, &["--peers", "2", "--tasks", "2", "--lease-table", "ecs-patchd-leases"], "dnf", "full", config)
}

/// Runs every one of `hosts` to its end at once ([`TestHost::run_to_end`]), each in its own thread.
fn all_to_end(hosts: &[TestHost]) -> Vec<Vec<common::Run>> {
    std::thread::scope(|scope| {
        let runs: Vec<_> = hosts.iter().map(|h| scope.spawn(move || h.run_to_end())).collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

/// Hosts of `fleet` out of service now (not ACTIVE, or agent disconnected).
fn out_of_service(state: &Value, fleet: &Fleet) -> usize {
    let ours: Vec<&Value> = fleet.hosts.iter().map(|h| &h.standin["instance_id"]).collect();
    state["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| ours.contains(&&i["ec2_instance_id"]))
        .filter(|i| i["status"] != "ACTIVE" || i["agent_connected"] != true)
        .count()
}

#[test]
fn four_hosts_roll_at_most_two_at_a_time_through_dynamodb() {
    let fleet = fleet(4, &dynamodb_config(2, "pause", "30s"));
    let results = all_to_end(&fleet.hosts);
    for (host, runs) in fleet.hosts.iter().zip(&results) {
        assert_eq!(runs.last().unwrap().code, 0, "{runs:#?}");
        assert_eq!(host.installed("demo-app"), "2.0");
        assert_eq!(host.record()["status"], "ACTIVE");
    }
    // Counted by the stand-in on every change of an instance or of the lease items.
    let peaks = &fleet.hosts[0].ecs()["peaks"];
    assert_eq!(peaks["out"], 2, "two hosts out at once, never three: {peaks}");
    assert_eq!(peaks["holders"], 2, "two slots held at once, never three: {peaks}");
    let lease = &fleet.lease()[LEASE_KEY];
    assert_eq!(lease["holders"], serde_json::json!([]), "{lease}");
    assert_eq!(lease["queue"], serde_json::json!([]), "{lease}");
    assert_eq!(lease["paused"], Value::Null);
    assert_eq!(out_of_service(&fleet.hosts[0].ecs(), &fleet), 0);
}

#[test]
fn one_zone_at_a_time_across_two_zones() {
    // Two hosts in two zones and a budget of two: only the zone rule keeps them apart.
    let config = format!("{}one_az_at_a_time = true\n", dynamodb_config(2, "pause", "30s"));
    let fleet = Fleet::start(
        2,
        &["--peers", "2", "--tasks", "2", "--lease-table", "ecs-patchd-leases", "--zones", "2"],
        "dnf",
        "full",
        &config,
    );
    let results = all_to_end(&fleet.hosts);
    for runs in &results {
        assert_eq!(runs.last().unwrap().code, 0, "{runs:#?}");
    }
    let peaks = &fleet.hosts[0].ecs()["peaks"];
    assert_eq!(peaks["zones_out"], 1, "hosts of one zone out at a time: {peaks}");
    assert_eq!(peaks["out"], 1, "{peaks}");
}

/// Host 0 takes the slot and is killed for good (kill -9 at the install); the others wait.
fn kill_the_holder(fleet: &Fleet) {
    let run = fleet.hosts[0].run_with(&["run"], &[("ECS_PATCHD_FAULT_KILL", "installing:persisted")]);
    assert_eq!(run.code, KILLED, "{run:?}");
    assert_eq!(fleet.lease()[LEASE_KEY]["holders"][0]["id"], fleet.hosts[0].standin["instance_id"]);
}

#[test]
fn a_holder_killed_mid_cycle_pauses_the_roll_and_operators_can_steer_it() {
    let fleet = fleet(3, &dynamodb_config(1, "pause", "3s"));
    kill_the_holder(&fleet);
    let expires_at = fleet.lease()[LEASE_KEY]["holders"][0]["expires_at"].as_u64().unwrap();
    let runs: Vec<common::Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = fleet.hosts[1..].iter().map(|h| scope.spawn(move || h.run(&["run"]))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for run in &runs {
        assert_eq!(run.code, 75, "a paused roll is 'try later': {run:?}");
        assert!(run.stdout.contains("the roll is paused"), "{}", run.stdout);
    }
    let dead = fleet.hosts[0].standin["instance_id"].as_str().unwrap();
    let pause = fleet.lease()[LEASE_KEY]["paused"].clone();
    assert!(pause["at"].as_u64().unwrap() >= expires_at, "paused only once the lease expired: {pause}");
    let paused = pause["reason"].as_str().unwrap().to_string();
    assert!(paused.contains(dead) && paused.contains("lease expired"), "{paused}");
    for host in &fleet.hosts[1..] {
        assert_eq!(host.record()["status"], "ACTIVE");
        assert_eq!(host.installed("demo-app"), "1.0", "nothing started after the pause");
    }
    assert_eq!(fleet.hosts[0].record()["status"], "DRAINING", "the dead host is left as it is");

    // The operator looks, frees the dead host's slot and resumes.
    let operator = &fleet.hosts[1];
    let status = operator.run(&["fleet", "status", "--json"]);
    assert_eq!(status.code, 0, "{status:?}");
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["group"]["control"]["paused"]["reason"], paused.as_str());
    let step = status["group"]["holders"][0]["step"].as_str().unwrap();
    assert!(["draining", "installing"].contains(&step), "the step at its last renewal: {step}");
    assert_eq!(status["instances"].as_array().unwrap().len(), 5, "{status}");
    assert_eq!(status["window"]["open"], true, "no windows configured: {status}");
    let text = operator.run(&["fleet", "status"]);
    assert!(text.stdout.contains("window     no maintenance window configured"), "{}", text.stdout);
    let refused = operator.run(&["fleet", "release", dead]);
    assert_ne!(refused.code, 0, "no terminal, no --yes: {refused:?}");
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert_eq!(operator.run(&["fleet", "release", dead, "--yes"]).code, 0);
    assert_eq!(operator.run(&["fleet", "resume"]).code, 0);
    let lease = &fleet.lease()[LEASE_KEY];
    assert_eq!(lease["holders"], serde_json::json!([]), "{lease}");
    assert_eq!(lease["paused"], Value::Null, "{lease}");
    let pause = operator.run(&["fleet", "pause", "--reason", "change freeze"]);
    assert_eq!(pause.code, 0, "{pause:?}");
    assert_eq!(fleet.lease()[LEASE_KEY]["paused"]["reason"], "change freeze");
}

/// `hosts` in a cluster whose tasks linger eight seconds in DEACTIVATING: a drain outlasts
/// the 3 s lease TTL of these tests many times over.
fn slow_drain_fleet(hosts: usize, config: &str) -> Fleet {
    let args = ["--peers", "2", "--tasks", "2", "--lease-table", "ecs-patchd-leases", "--deactivating-seconds", "8"];
    Fleet::start(hosts, &args, "dnf", "full", config)
}

/// Runs `first` to its end (with `env`) and, once it is draining, `second` beside it: the
/// runs of each.
fn second_waits_for_first(first: &TestHost, env: &[(&str, &str)], second: &TestHost) -> [Vec<common::Run>; 2] {
    std::thread::scope(|scope| {
        let draining = scope.spawn(|| first.run_to_end_with(env));
        first.wait_for_step("draining");
        let waited = second.run_to_end();
        [draining.join().unwrap(), waited]
    })
}

#[test]
fn a_holder_whose_clock_runs_30_days_behind_keeps_its_slot_while_it_renews() {
    // The holder renews every second while the host behind it waits at the head of the queue.
    let fleet = slow_drain_fleet(2, &dynamodb_config(1, "pause", "3s"));
    let behind = wall_clock_off("-30d");
    let (holder, waiter) = (&fleet.hosts[0], &fleet.hosts[1]);
    let [holder_runs, waiter_runs] = second_waits_for_first(holder, &borrowed(&behind), waiter);
    for (host, runs) in [(holder, &holder_runs), (waiter, &waiter_runs)] {
        assert_eq!(runs.last().unwrap().code, 0, "{runs:#?}");
        assert_eq!(host.installed("demo-app"), "2.0");
        assert_eq!(host.record()["status"], "ACTIVE");
    }
    // Before, the waiter took the holder's expiry (30 days ago by the holder's clock) as
    // past, and paused the roll a second into the drain.
    let lease = &fleet.lease()[LEASE_KEY];
    assert_eq!(lease["paused"], Value::Null, "{lease}");
    assert_eq!(fleet.hosts[0].ecs()["peaks"]["holders"], 1);
}

#[test]
fn a_dead_holder_whose_clock_ran_30_days_ahead_is_found_by_its_silence() {
    let fleet = fleet(2, &dynamodb_config(1, "pause", "3s"));
    let ahead = wall_clock_off("+30d");
    let mut env = borrowed(&ahead);
    env.push(("ECS_PATCHD_FAULT_KILL", "installing:persisted"));
    let run = fleet.hosts[0].run_with(&["run"], &env);
    assert_eq!(run.code, KILLED, "{run:?}");
    let dead = fleet.hosts[0].standin["instance_id"].as_str().unwrap();
    // The operator sees who blocks the queue and that its clock is wrong.
    let status = fleet.hosts[1].run(&["fleet", "status"]);
    let blocked = status.stdout.lines().find(|l| l.starts_with("blocked by")).unwrap_or_default().to_string();
    assert!(blocked.contains(dead) && blocked.contains("holds one of the 1 slot(s)"), "{}", status.stdout);
    assert!(blocked.contains("its clock runs at least 29days"), "{blocked}");
    // Before, its lease expired by its clock in 30 days: the host behind waited that long.
    let run = fleet.hosts[1].run(&["run"]);
    assert_eq!(run.code, 75, "a paused roll is 'try later': {run:?}");
    let paused = fleet.lease()[LEASE_KEY]["paused"]["reason"].as_str().unwrap().to_string();
    assert!(paused.contains(dead) && paused.contains("not renewed for"), "{paused}");
    assert_eq!(fleet.hosts[1].record()["status"], "ACTIVE");
    let status = fleet.hosts[1].run(&["fleet", "status", "--json"]);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    let blocked = status["group"]["blocked_by"][0].as_str().unwrap();
    assert!(blocked.starts_with("the roll is paused") && blocked.contains(dead), "{status}");
}

#[test]
fn a_dead_holder_is_found_by_runs_that_each_wait_less_than_its_lease() {
    // Each run waits 2 s for a slot, less than the 3 s TTL: the host's next run goes on
    // watching where the last one stopped (the watch is kept in its state directory).
    let config = format!("{}wait_timeout = \"2s\"\n", dynamodb_config(1, "pause", "3s"));
    let fleet = fleet(2, &config);
    kill_the_holder(&fleet);
    let dead = fleet.hosts[0].standin["instance_id"].as_str().unwrap();
    let mut runs = Vec::new();
    while fleet.lease()[LEASE_KEY]["paused"].is_null() {
        assert!(runs.len() < 4, "never judged (each run watched afresh): {runs:#?}");
        let run = fleet.hosts[1].run(&["run"]);
        assert_eq!(run.code, 75, "{run:?}");
        runs.push(run);
    }
    assert!(runs[0].stderr.contains("no slot within 2s"), "the first run alone could not judge: {runs:#?}");
    let paused = fleet.lease()[LEASE_KEY]["paused"]["reason"].as_str().unwrap().to_string();
    assert!(paused.contains(dead) && paused.contains("not renewed for"), "{paused}");
}

#[test]
fn a_host_terminated_mid_cycle_stops_counting_and_the_roll_goes_on() {
    // One slot: the terminated holder's DRAINING record alone would hold the roll for good.
    for policy in ["reclaim", "pause"] {
        let config = format!("{}wait_timeout = \"40s\"\n", dynamodb_config(1, policy, "3s"));
        let fleet = fleet(3, &config);
        kill_the_holder(&fleet);
        // Under pause, the operator comes later: by then EC2 no longer lists the instance
        // at all (after "usually less than one hour"); under reclaim it is still listed,
        // `terminated`.
        let purged = policy == "pause";
        fleet.hosts[0].control("terminate", &format!("{{\"host\": 0, \"purged\": {purged}}}"));
        let dead = fleet.hosts[0].standin["instance_id"].as_str().unwrap();
        assert_eq!(fleet.hosts[0].record()["status"], "DRAINING", "ECS keeps the record");
        let mut logged = String::new();
        if policy == "pause" {
            let run = fleet.hosts[1].run(&["run"]);
            assert_eq!(run.code, 75, "{policy}: {run:?}");
            assert!(run.stdout.contains("the roll is paused"), "{}", run.stdout);
            for command in [&["fleet", "release", dead, "--yes"][..], &["fleet", "resume"]] {
                assert_eq!(fleet.hosts[1].run(command).code, 0, "{command:?}");
            }
            // The shared snapshot of a cluster this small is reused for up to 24 s (two
            // refresh intervals): let it age, so that the hosts look at the cluster afresh
            // and find the dead record there.
            std::thread::sleep(std::time::Duration::from_secs(25));
        }
        // One after the other: the second looks at the cluster afresh, the dead record in it.
        for host in &fleet.hosts[1..] {
            let runs = host.run_to_end();
            assert_eq!(runs.last().unwrap().code, 0, "{policy}: {runs:#?}");
            runs.iter().for_each(|r| logged.push_str(&r.stderr));
            assert_eq!(host.installed("demo-app"), "2.0", "{policy}");
        }
        assert!(logged.contains("its container-instance record does not count"), "{policy}: {logged}");
        assert_eq!(fleet.hosts[0].record()["status"], "DRAINING", "another host's record is left as it is");
        assert_eq!(fleet.lease()[LEASE_KEY]["holders"], serde_json::json!([]), "{policy}");
    }
}

#[test]
fn a_dead_holder_is_reclaimed_under_reclaim_and_the_roll_goes_on() {
    // Host 1 drains while host 2, at the head of the queue with both slots held, watches
    // the dead host's slot go unrenewed for the TTL and reclaims it.
    let fleet = slow_drain_fleet(3, &dynamodb_config(2, "reclaim", "3s"));
    kill_the_holder(&fleet);
    fleet.hosts[0].host_control("agent/stop");
    let results = second_waits_for_first(&fleet.hosts[1], &[], &fleet.hosts[2]);
    let mut logged = String::new();
    for (host, runs) in fleet.hosts[1..].iter().zip(&results) {
        assert_eq!(runs.last().unwrap().code, 0, "{runs:#?}");
        assert_eq!(host.installed("demo-app"), "2.0");
        runs.iter().for_each(|r| logged.push_str(&r.stderr));
    }
    assert!(logged.contains("reclaiming a stale slot: its instance is disconnected"), "{logged}");
    let lease = &fleet.lease()[LEASE_KEY];
    assert_eq!(lease["paused"], Value::Null, "{lease}");
    assert_eq!(lease["holders"], serde_json::json!([]), "the dead host's slot was reclaimed: {lease}");
}

fn fleetlock_host(scenario: &str, config: &str) -> TestHost {
    let host = TestHost::start(Options { scenario, fleetlock_slots: 1, ..Options::default() });
    let url = host.standin["fleetlock_url"].as_str().unwrap().to_string();
    host.merge_config(&format!(
        "[coordination]\nbackend = \"fleetlock\"\nfleetlock_url = \"{url}\"\ngroup = \"web\"\n{config}"
    ));
    host
}

#[test]
fn fleetlock_slot_is_taken_before_the_drain_and_given_back_after() {
    let host = fleetlock_host("full", "");
    host.run_to_success("");
    assert_eq!(host.installed("demo-app"), "2.0");
    let lock = host.control("fleetlock", "{}");
    let calls: Vec<&str> = lock["calls"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(calls, ["/v1/pre-reboot", "/v1/steady-state"], "{lock}");
    assert_eq!(lock["calls"][0]["group"], "web");
    assert_eq!(lock["holders"], serde_json::json!([]));
}

#[test]
fn a_full_fleetlock_semaphore_keeps_the_host_waiting_untouched() {
    let host = fleetlock_host("full", "wait_timeout = \"2s\"\n");
    host.control("fleetlock/hold", "{\"id\": \"another-node\"}");
    let run = host.run(&["run"]);
    assert_eq!(run.code, 75, "waiting is not failing: {run:?}");
    assert!(run.stdout.contains("no slot within 2s (FleetLock: semaphore is full)"), "{}", run.stdout);
    assert_eq!(host.record()["status"], "ACTIVE");
    assert_eq!(host.installed("demo-app"), "1.0");
    assert_eq!(host.calls("UpdateContainerInstancesState:DRAINING"), 0);
}

#[test]
fn a_failed_cycle_keeps_its_fleetlock_slot_so_the_roll_halts() {
    let host = fleetlock_host("broken", "");
    let run = host.run(&["run"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(host.record()["status"], "ACTIVE", "back in service");
    assert_eq!(host.control("fleetlock", "{}")["holders"], serde_json::json!([host.standin["instance_id"]]));
}

#[test]
fn a_host_whose_slot_was_taken_away_starts_no_new_destructive_step() {
    let fleet = fleet(2, &dynamodb_config(1, "pause", "30s"));
    kill_the_holder(&fleet);
    let host = &fleet.hosts[0];
    let id = host.standin["instance_id"].as_str().unwrap();
    assert_eq!(fleet.hosts[1].run(&["fleet", "release", id, "--yes"]).code, 0);
    // The host comes back to a cycle at "installing" without its slot.
    let run = host.run(&["run"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("no longer ours"), "{}", run.stderr);
    assert!(run.stdout.contains("failed at installing"), "{}", run.stdout);
    assert_eq!(host.installed("demo-app"), "1.0", "nothing was installed");
    assert_eq!(host.reboots(), 0);
    assert_eq!(host.record()["status"], "ACTIVE", "back in service");
    let paused = fleet.lease()[LEASE_KEY]["paused"]["reason"].as_str().unwrap().to_string();
    assert!(paused.contains("lease lapsed"), "{paused}");
}

/// One host on DynamoDB with `extra` coordination settings.
fn one_host(extra: &str) -> Fleet {
    fleet(1, &format!("{}{extra}", dynamodb_config(1, "pause", "30s")))
}

#[test]
fn no_slot_is_granted_while_a_watched_alarm_fires() {
    let fleet = one_host("alarms = [\"api-5xx\"]\nwait_timeout = \"3s\"\n");
    fleet.control("alarm", r#"{"name": "api-5xx", "state": "ALARM"}"#);
    let host = &fleet.hosts[0];
    let run = host.run(&["run"]);
    assert_eq!(run.code, 75, "no slot within the wait: not now, not failed: {run:?}");
    assert!(run.stdout.contains("api-5xx are in ALARM"), "{}", run.stdout);
    assert_eq!(host.record()["status"], "ACTIVE");
    assert_eq!(host.installed("demo-app"), "1.0", "nothing was changed");
    fleet.control("alarm", r#"{"name": "api-5xx", "state": "OK"}"#);
    let runs = host.run_to_end();
    assert_eq!(runs.last().unwrap().code, 0, "{runs:#?}");
    assert_eq!(host.installed("demo-app"), "2.0");
}

#[test]
fn services_slow_to_recover_keep_the_slot_then_pause_the_roll_by_name() {
    let fleet = one_host("recovery_timeout = \"2s\"\n");
    fleet.control("service-deficit", r#"{"web": 1}"#);
    let host = &fleet.hosts[0];
    let runs = host.run_to_end();
    assert_eq!(runs.last().unwrap().code, 0, "the host itself is patched: {runs:#?}");
    assert_eq!(host.installed("demo-app"), "2.0");
    assert_eq!(host.record()["status"], "ACTIVE");
    let lease = &fleet.lease()[LEASE_KEY];
    let paused = lease["paused"]["reason"].as_str().unwrap_or_default();
    assert!(paused.contains("did not recover") && paused.contains("web runs"), "{lease}");
    assert_eq!(lease["holders"], serde_json::json!([]), "the slot is given back: {lease}");
}

#[test]
fn a_lease_record_of_the_old_format_is_refused_while_held_and_converted_when_empty() {
    let fleet = one_host("");
    let host = &fleet.hosts[0];
    let holder = r#"{"id":"i-0old","arn":"a","token":41,"cycle":"c","step":"installing","availability_zone":null,
        "allocated":{"cpu":0,"memory":0},"acquired_at":0,"renewed_at":0,"expires_at":0}"#;
    let old = |holders: &str| {
        let body = format!(r#"{{"holders":[{holders}],"queue":[],"paused":null,"next_token":42}}"#);
        serde_json::json!({ "key": LEASE_KEY, "body": body }).to_string()
    };
    fleet.control("lease/put", &old(holder));
    let refused = host.run(&["run"]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("single-item format") && refused.stderr.contains("i-0old"), "{refused:?}");
    assert_eq!(host.record()["status"], "ACTIVE", "nothing was changed");
    fleet.control("lease/put", &old(""));
    let runs = host.run_to_end();
    assert_eq!(runs.last().unwrap().code, 0, "{runs:#?}");
    assert_eq!(fleet.lease()[LEASE_KEY]["control"]["next_token"], 43, "the fencing tokens go on");
}

#[test]
fn one_failure_is_reported_once_by_its_host_and_the_hosts_behind_it_wait() {
    let fleet = fleet(2, &dynamodb_config(1, "pause", "30s"));
    let (failing, waiting) = (&fleet.hosts[0], &fleet.hosts[1]);
    for host in &fleet.hosts {
        host.metrics_textfile();
    }
    failing.merge_config("[host]\nreboot_command = [\"false\"]\n");
    let failed = failing.run(&["run"]);
    assert_eq!(failed.code, 1, "{failed:?}");
    let failing_id = failing.standin["instance_id"].as_str().unwrap();
    // The host behind it, at two checks while the pause lasts: waiting, not failed.
    for _ in 0..2 {
        let run = waiting.run(&["run"]);
        assert_eq!(run.code, 75, "{run:?}");
        assert!(run.stdout.contains("not now (paused"), "{}", run.stdout);
        assert!(run.stdout.contains(failing_id), "names who paused it: {}", run.stdout);
    }
    let metrics = |host: &TestHost| std::fs::read_to_string(host.path("ecs_patchd.prom")).unwrap();
    assert!(metrics(failing).contains("ecs_patchd_failures_total{kind=\"host\"} 1"), "{}", metrics(failing));
    assert!(!metrics(waiting).contains("ecs_patchd_failures_total{"), "{}", metrics(waiting));
    let last_cycle_items = |host: &TestHost| {
        host.ssm_requests("PutComplianceItems")
            .iter()
            .filter(|r| r["ResourceId"] == host.standin["instance_id"])
            .flat_map(|r| r["Items"].as_array().unwrap().clone())
            .filter(|i| i["Id"] == "last-cycle")
            .count()
    };
    assert!(last_cycle_items(failing) >= 1, "the failed host reports its failure");
    assert_eq!(last_cycle_items(waiting), 0, "the waiting host reports no failure of its own");
    assert_eq!(waiting.installed("demo-app"), "1.0");
}

#[test]
fn in_place_installs_take_a_slot_and_roll_one_host_at_a_time() {
    let fleet = Fleet::start(
        3,
        &["--peers", "2", "--tasks", "2", "--lease-table", "ecs-patchd-leases"],
        "dnf",
        "userland",
        &dynamodb_config(1, "pause", "30s"),
    );
    let results = all_to_end(&fleet.hosts);
    for (host, runs) in fleet.hosts.iter().zip(&results) {
        assert_eq!(runs.last().unwrap().code, 0, "{runs:#?}");
        assert_eq!(host.installed("demo-app"), "2.0");
        assert_eq!(host.steps(), ["downloading", "waiting-for-slot", "installing-in-place", "releasing", "done"]);
    }
    let state = fleet.hosts[0].ecs();
    assert_eq!(state["peaks"]["holders"], 1, "one in-place install at a time: {}", state["peaks"]);
    assert_eq!(fleet.hosts[0].calls("UpdateContainerInstancesState:DRAINING"), 0, "and no drain");
    assert_eq!(fleet.lease()[LEASE_KEY]["holders"], serde_json::json!([]));
}
