//! Property test over seeded simulations: the real cycle and lease code for a random small
//! cluster, policy and fault mix per seed. `ECS_PATCHD_SIM_SEEDS=N` runs N seeds (default
//! 1,000, split over four tests). A failing seed is printed with the command that replays it.

use std::time::Duration;

use ecs_patchd::coordination::policy::Budget;
use ecs_patchd::coordination::store::StalePolicy;
use ecs_patchd::sim::kernels::LivePatchRun;
use ecs_patchd::sim::ports::Timings;
use ecs_patchd::sim::world::{DAEMON_SIZE, HOST_CAPACITY, STOP_TIMEOUT, TASK_SIZE};
use ecs_patchd::sim::{Faults, Options, Report, simulate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn seeds() -> u64 {
    let seeds = std::env::var("ECS_PATCHD_SIM_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
    assert!(seeds >= 4, "ECS_PATCHD_SIM_SEEDS={seeds}: at least one seed per part, or nothing is checked");
    seeds
}

/// The most hosts the policy lets out, from its definition (a count, or a percentage of
/// the hosts rounded down, at least one), not from the code under test.
fn allowed_out(budget: Budget, hosts: usize) -> usize {
    match budget {
        Budget::Count(n) => n as usize,
        Budget::Percent(p) => ((hosts as f64 * f64::from(p) / 100.0).floor() as usize).max(1),
    }
}

fn options(seed: u64) -> Options {
    let mut rng = StdRng::seed_from_u64(seed);
    let rate = |rng: &mut StdRng| if rng.random_bool(0.3) { rng.random_range(0.05..0.3) } else { 0.0 };
    Options {
        hosts: rng.random_range(2..=12),
        tasks_per_host: rng.random_range(1..=6),
        zones: rng.random_range(1..=3),
        max_unavailable: if rng.random_bool(0.5) {
            Budget::Count(rng.random_range(1..=3))
        } else {
            Budget::Percent(rng.random_range(10..=50))
        },
        min_healthy_percent: if rng.random_bool(0.3) { 50 } else { 0 },
        one_az_at_a_time: rng.random_bool(0.3),
        on_stale_lease: if rng.random_bool(0.5) { StalePolicy::Pause } else { StalePolicy::Reclaim },
        seed,
        start_within: Duration::from_secs(rng.random_range(0..600)),
        faults: Faults {
            crash: rate(&mut rng),
            failed_install: rate(&mut rng),
            slow_drain: rate(&mut rng),
            never_returns: rate(&mut rng),
            // DynamoDB throttling, which every lease operation must take as transient.
            throttling: if rng.random_bool(0.2) { rng.random_range(0.01..0.2) } else { 0.0 },
            ecs_outage: Duration::ZERO,
            slow_recovery: rate(&mut rng),
            bad_agent_release: false,
        },
        weeks: 1,
        kernel_every: 1,
        alarm: rng.random_bool(0.2).then(|| {
            let from = Duration::from_secs(rng.random_range(1..1800));
            (from, from + Duration::from_secs(rng.random_range(60..900)))
        }),
        edge_hosts: 0,
        livepatch: None,
    }
}

/// [`options`] for the seeded runs: three in ten with hosts that run a task with a static
/// host port (drawn apart, so that each seed's other choices stay what they were). Never on
/// every host, nor on hosts too full to take one more task: then no host drains and each
/// waits out a virtual day, which
/// `a_static_host_port_held_on_every_host_drains_none_and_one_free_host_lets_the_roll_finish`
/// shows once.
fn seeded_options(seed: u64) -> Options {
    let mut o = options(seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0xED6E);
    if rng.random_bool(0.3) && o.tasks_per_host + 2 <= service_tasks_per_host() {
        o.edge_hosts = rng.random_range(1..o.hosts);
    }
    o
}

fn replay(o: &Options) -> String {
    format!(
        "ecs-patchd simulate --hosts {} --tasks {} --edge-hosts {} --zones {} --max-unavailable {} --min-healthy-percent {}{} \
         --on-stale-lease {} --seed {} --start-within {} --crash {} --failed-install {} --slow-drain {} --never-returns {} --throttling {} --slow-recovery {}{}",
        o.hosts,
        o.tasks_per_host,
        o.edge_hosts,
        o.zones,
        o.max_unavailable,
        o.min_healthy_percent,
        if o.one_az_at_a_time { " --one-az-at-a-time" } else { "" },
        if o.on_stale_lease == StalePolicy::Pause { "pause" } else { "reclaim" },
        o.seed,
        o.start_within.as_secs(),
        o.faults.crash,
        o.faults.failed_install,
        o.faults.slow_drain,
        o.faults.never_returns,
        o.faults.throttling,
        o.faults.slow_recovery,
        o.alarm.map_or(String::new(), |(from, to)| format!(
            " --alarm-at {} --alarm-for {}",
            from.as_secs(),
            (to - from).as_secs()
        ))
    )
}

/// What must hold for every seed; `Err` says which property broke.
fn check(o: &Options, r: &Report) -> Result<(), String> {
    let budget = allowed_out(o.max_unavailable, o.hosts);
    if r.peak_out > budget {
        return Err(format!("{} hosts out at once, max_unavailable allows {budget}", r.peak_out));
    }
    // A host that never comes back is out of the policy's hands (and leaves the cluster
    // once terminated): the world-side policy checks hold where none does.
    let undisturbed = o.faults.never_returns == 0.0;
    if undisturbed && r.lowest_in_service * 100 < o.min_healthy_percent as usize * o.hosts {
        return Err(format!(
            "only {} of {} hosts in service at one point, min_healthy_percent is {}",
            r.lowest_in_service, o.hosts, o.min_healthy_percent
        ));
    }
    if undisturbed && o.one_az_at_a_time && r.most_zones_out > 1 {
        return Err(format!("hosts of {} zones out at once with one_az_at_a_time", r.most_zones_out));
    }
    if r.patched_claims_untrue > 0 {
        return Err(format!("{} journal(s) say patched, the world does not agree", r.patched_claims_untrue));
    }
    if r.lease_queue_at_end > 0 {
        return Err(format!("{} host(s) still queued in the lease at the end", r.lease_queue_at_end));
    }
    // Only a host that never came back may still hold a slot (its slot is reclaimed only
    // when a host still waits for one).
    if let Some(alive) = r.lease_holders_at_end.iter().find(|h| !r.dead_hosts.contains(h)) {
        return Err(format!("{alive} still holds a slot at the end, and it is alive"));
    }
    if r.installs_beside_live_tasks > 0 {
        return Err(format!("{} install(s) began with a task still on the host", r.installs_beside_live_tasks));
    }
    if r.unplaceable_tasks > 0 {
        return Err(format!("the capacity guard let {} task(s) find no room", r.unplaceable_tasks));
    }
    if r.patched + r.failed + r.gave_up_waiting + r.stopped_by_pause + r.dead != o.hosts {
        return Err(format!("hosts unaccounted for: {r:?}"));
    }
    if r.left_draining > 0 {
        return Err(format!("{} live host(s) left DRAINING by ecs-patchd", r.left_draining));
    }
    if o.on_stale_lease == StalePolicy::Pause && r.ecs_reads_behind_queue_head > 0 {
        return Err(format!("hosts that were only waiting made {} ECS read(s)", r.ecs_reads_behind_queue_head));
    }
    if r.grants_during_alarm > 0 {
        return Err(format!("{} drain(s) began while the alarm was firing", r.grants_during_alarm));
    }
    if r.grants_after_pause > 0 {
        return Err(format!("{} slot(s) granted after the roll was paused", r.grants_after_pause));
    }
    if r.failed > 0 && r.paused.is_none() {
        return Err(format!("{} cycle(s) failed but the roll was not paused", r.failed));
    }
    if r.stopped_by_pause > 0 && r.paused.is_none() {
        return Err("hosts stopped for a pause that is not recorded".into());
    }
    // Any host can be drained when the others have room in all for its service tasks (its
    // daemon task stays), counting an edge task on every host, and one host has the edge
    // service's port free.
    let per_host = service_tasks_per_host();
    let busiest = o.tasks_per_host + usize::from(o.edge_hosts > 0);
    // A host an edge task moved to after its check defers (changing nothing): with edge
    // hosts, all are patched only over more weeks than a seed runs.
    let absorbable = o.hosts * (per_host - busiest.min(per_host)) >= per_host && o.edge_hosts == 0;
    let recovery_pause = r.paused.as_deref().is_some_and(|p| p.contains("did not recover"));
    if recovery_pause && o.faults.slow_recovery == 0.0 {
        return Err(format!("the roll paused for services that recover at once: {:?}", r.paused));
    }
    let faultless = o.faults.failed_install == 0.0 && o.faults.never_returns == 0.0 && o.faults.slow_recovery == 0.0;
    if faultless && absorbable && (r.patched_in_service != o.hosts || r.paused.is_some()) {
        return Err(format!("without faults only {} of {} hosts were patched: {r:?}", r.patched_in_service, o.hosts));
    }
    Ok(())
}

/// What the seeds of one part exercised, so that a branch no seed reached shows.
#[derive(Default)]
struct Exercised {
    min_healthy: usize,
    one_az: usize,
    reclaimed: usize,
    paused: usize,
}

/// Service tasks one simulated host holds besides its daemon task, from the simulator's sizes.
fn service_tasks_per_host() -> usize {
    let room = HOST_CAPACITY.minus(DAEMON_SIZE);
    usize::try_from((room.cpu / TASK_SIZE.cpu).min(room.memory / TASK_SIZE.memory)).unwrap()
}

fn run_share(part: u64, parts: u64) {
    let total = seeds();
    let mut failures = Vec::new();
    let mut seen = Exercised::default();
    for seed in (0..total).filter(|s| s % parts == part) {
        let o = seeded_options(seed);
        let report = simulate(&o, &mut |_| {}).unwrap_or_else(|e| panic!("seed {seed}: {e}\n  replay: {}", replay(&o)));
        if let Err(why) = check(&o, &report) {
            failures.push(format!("seed {seed}: {why}\n  replay: {}", replay(&o)));
        }
        // Runs where the rule could have bitten: some host went out.
        seen.min_healthy += usize::from(o.min_healthy_percent > 0 && report.peak_out > 0);
        seen.one_az += usize::from(o.one_az_at_a_time && o.zones > 1 && report.peak_out > 0);
        let reclaimed = report.dead_hosts.iter().filter(|d| !report.lease_holders_at_end.contains(d)).count();
        seen.reclaimed += usize::from(o.on_stale_lease == StalePolicy::Reclaim && reclaimed > 0);
        seen.paused += usize::from(report.paused.is_some());
    }
    assert!(failures.is_empty(), "{} seed(s) failed:\n{}", failures.len(), failures.join("\n"));
    // With 250 seeds a part, each branch is reached many times; at 4 seeds, maybe not.
    if total >= 400 {
        for (what, n) in [
            ("min_healthy_percent", seen.min_healthy),
            ("one_az_at_a_time", seen.one_az),
            ("a reclaimed slot", seen.reclaimed),
            ("a paused roll", seen.paused),
        ] {
            assert!(n > 0, "no seed of part {part} exercised {what}");
        }
    }
}

#[test]
fn seeded_simulations_part_1_of_4() {
    run_share(0, 4);
}

#[test]
fn seeded_simulations_part_2_of_4() {
    run_share(1, 4);
}

#[test]
fn seeded_simulations_part_3_of_4() {
    run_share(2, 4);
}

#[test]
fn seeded_simulations_part_4_of_4() {
    run_share(3, 4);
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let o = options(42);
    let a = simulate(&o, &mut |_| {}).unwrap();
    let b = simulate(&o, &mut |_| {}).unwrap();
    assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
}

#[test]
fn a_failed_install_pauses_the_roll_and_nothing_new_starts() {
    let mut o = options(7);
    o.hosts = 10;
    o.max_unavailable = Budget::Count(2);
    o.faults = Faults { failed_install: 0.3, ..Faults::default() };
    let r = simulate(&o, &mut |_| {}).unwrap();
    assert!(r.failed >= 1, "{r:?}");
    assert!(r.paused.as_deref().is_some_and(|p| p.contains("failed at installing")), "{r:?}");
    assert!(r.stopped_by_pause >= 1, "waiting hosts stop: {r:?}");
    assert_eq!(r.grants_after_pause, 0);
    assert_eq!(r.left_draining, 0);
}

#[test]
fn sustained_ecs_throttling_stops_runs_at_their_step_and_never_pauses_the_roll() {
    let mut o = options(5);
    o.hosts = 6;
    o.max_unavailable = Budget::Count(2);
    o.min_healthy_percent = 0;
    o.start_within = Duration::ZERO;
    // Half an hour of throttled writes: longer than a step's tries (about five minutes).
    o.faults = Faults { ecs_outage: Duration::from_secs(30 * 60), ..Faults::default() };
    let r = simulate(&o, &mut |_| {}).unwrap();
    assert!(r.failed_runs >= 1, "runs stopped at the throttled step: {r:?}");
    assert_eq!(r.paused, None, "a transient error is no failure of the host: {r:?}");
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(r.patched, o.hosts, "every host patched once ECS answered: {r:?}");
    assert_eq!(r.left_draining, 0, "{r:?}");
}

#[test]
fn an_agent_release_that_never_reconnects_halts_the_roll_after_the_first_host() {
    let mut o = options(11);
    o.hosts = 10;
    o.max_unavailable = Budget::Count(2);
    o.faults = Faults { bad_agent_release: true, ..Faults::default() };
    let r = simulate(&o, &mut |_| {}).unwrap();
    assert!(r.paused.as_deref().is_some_and(|p| p.contains("failed at restarting-agent")), "{r:?}");
    // In-place installs take a slot: with two slots, at most two hosts restart their agent
    // before the first failure pauses the roll.
    assert!((1..=2).contains(&r.failed), "{r:?}");
    assert!(r.stopped_by_pause >= 8, "the others wait behind the pause: {r:?}");
    assert_eq!(r.grants_after_pause, 0, "{r:?}");
    assert_eq!(r.patched, 0, "{r:?}");
}

#[test]
fn a_host_that_never_returns_is_reclaimed_under_reclaim_and_pauses_the_roll_otherwise() {
    for policy in [StalePolicy::Reclaim, StalePolicy::Pause] {
        let mut paused_runs = 0;
        for seed in 0..60 {
            let mut o = options(seed);
            o.hosts = 6;
            o.tasks_per_host = 2;
            o.max_unavailable = Budget::Count(1);
            o.min_healthy_percent = 0;
            o.on_stale_lease = policy;
            o.faults = Faults { never_returns: 0.15, ..Faults::default() };
            let r = simulate(&o, &mut |_| {}).unwrap();
            if r.dead != 1 {
                continue;
            }
            assert!(r.peak_out <= 1, "seed {seed}: {r:?}");
            match policy {
                StalePolicy::Reclaim => {
                    assert!(r.paused.is_none(), "seed {seed}: {r:?}");
                    assert_eq!(r.patched, o.hosts - 1, "seed {seed}: the roll goes on without it: {r:?}");
                }
                StalePolicy::Pause => {
                    // Paused, unless every other host had already finished when its lease expired.
                    assert!(r.paused.is_some() || r.patched == o.hosts - 1, "seed {seed}: {r:?}");
                    if r.paused.is_some() {
                        paused_runs += 1;
                        assert!(r.paused.as_deref().unwrap().contains("lease expired"), "{r:?}");
                    }
                }
            }
        }
        if policy == StalePolicy::Pause {
            assert!(paused_runs > 0, "no seed exercised the pause");
        }
    }
}

#[test]
fn the_capacity_guard_needs_no_room_for_daemon_tasks() {
    // 7 hosts of 6 service tasks and a daemon task: the 6 others have room for exactly the
    // 6 service tasks of the one drained, not for its daemon task too, which never moves.
    let per_host = service_tasks_per_host();
    let mut o = options(3);
    o.hosts = per_host;
    o.tasks_per_host = per_host - 1;
    o.max_unavailable = Budget::Count(1);
    o.min_healthy_percent = 0;
    o.one_az_at_a_time = false;
    o.faults = Faults::default();
    let r = simulate(&o, &mut |_| {}).unwrap();
    assert_eq!(r.patched, o.hosts, "{r:?}");
    assert_eq!(r.unplaceable_tasks, 0, "{r:?}");
}

#[test]
fn a_static_host_port_held_on_every_host_drains_none_and_one_free_host_lets_the_roll_finish() {
    // Every host runs a task with host port 80: none can move, so no drain starts (each
    // host gives up waiting, naming the port) and no task is left without a place.
    let mut o = options(7);
    o.hosts = 6;
    o.tasks_per_host = 2;
    o.max_unavailable = Budget::Count(2);
    o.min_healthy_percent = 0;
    o.one_az_at_a_time = false;
    o.faults = Faults::default();
    o.alarm = None;
    o.edge_hosts = 6;
    let r = simulate(&o, &mut |_| {}).unwrap();
    assert_eq!(r.drains, 0, "{r:?}");
    assert_eq!(r.gave_up_waiting, o.hosts, "{r:?}");
    assert_eq!(r.unplaceable_tasks, 0, "{r:?}");
    // One host without it: each drain moves the port to a host where it is free, never two
    // port tasks meant for the one free host at once. A host that a holder's port task
    // moved to after its turn was checked defers at the drain, changing nothing, and is
    // patched the week after.
    o.edge_hosts = 5;
    o.weeks = 2;
    let r = simulate(&o, &mut |_| {}).unwrap();
    assert_eq!(r.patched, o.hosts, "{r:?}");
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(r.unplaceable_tasks, 0, "{r:?}");
}

#[test]
fn tasks_still_deactivating_keep_the_host_drained() {
    // Stopped tasks linger in DEACTIVATING and STOPPING, and the daemon task stops after
    // them: no install may begin before all are gone from the host, so a host is out at
    // least for the move, the lingering, the daemon's stop, the install and the boot.
    let t = Timings::default();
    let least = (t.task_move + t.deactivation + STOP_TIMEOUT + t.install + t.boot).as_secs_f64();
    for seed in 0..20 {
        let mut o = options(seed);
        o.hosts = 4;
        o.tasks_per_host = 2;
        o.max_unavailable = Budget::Count(1);
        o.faults = Faults::default();
        let r = simulate(&o, &mut |_| {}).unwrap();
        assert_eq!(r.patched, o.hosts, "seed {seed}: {r:?}");
        assert_eq!(r.installs_beside_live_tasks, 0, "seed {seed}: {r:?}");
        assert!(r.out_of_service_mean_s >= least, "seed {seed}: out {}s, at least {least}s", r.out_of_service_mean_s);
    }
}

/// Seed 5's cluster of `hosts` hosts of two tasks, `budget` out at once, no faults, `weeks`
/// weekly rolls.
fn weekly_rolls(hosts: usize, budget: u32, weeks: usize) -> Options {
    let mut o = options(5);
    o.hosts = hosts;
    o.tasks_per_host = 2;
    o.max_unavailable = Budget::Count(budget);
    o.min_healthy_percent = 0;
    o.faults = Faults::default();
    o.weeks = weeks;
    o
}

#[test]
fn weeks_without_a_kernel_install_in_place_and_drain_nothing() {
    // Four weekly rolls, a kernel every second week: the kernel weeks drain every host,
    // the userland weeks none, and every week patches every host.
    let mut o = weekly_rolls(6, 2, 4);
    o.kernel_every = 2;
    let r = simulate(&o, &mut |_| {}).unwrap();
    assert_eq!(r.cycles_patched, 24, "{r:?}");
    assert_eq!(r.drains, 12, "two kernel weeks drain each host once: {r:?}");
    assert_eq!(r.drains_avoided, 12, "two userland weeks drain none: {r:?}");
    assert_eq!(r.installs_beside_live_tasks, 0, "{r:?}");
    assert!(r.peak_out <= 2, "{r:?}");
    assert_eq!(r.patched_claims_untrue, 0, "{r:?}");
}

#[test]
fn live_patches_avoid_most_kernel_drains_week_after_week() {
    // A kernel fix every week, one in four without a live patch: without live patching every
    // host drains every week; with it, a host drains for the fixes no live patch covers (and
    // when its wait of 30 days runs out), and installs the live patches in place meanwhile.
    let o = weekly_rolls(3, 1, 8);
    let run = |misses, reboot_within| {
        let o = Options { livepatch: Some(LivePatchRun { misses, reboot_within }), ..o.clone() };
        let r = simulate(&o, &mut |_| {}).unwrap();
        check(&o, &r).unwrap_or_else(|e| panic!("{e}: {r:?}"));
        assert_eq!((r.failed, r.patched_claims_untrue, r.installs_beside_live_tasks), (0, 0, 0), "{r:?}");
        r
    };
    let without = run(0, None);
    let with = run(4, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(without.drains, 8 * o.hosts, "{without:?}");
    // Kernels 4 and 8 have no live patch: two drains a host, the other weeks in place.
    assert_eq!(with.drains, 2 * o.hosts, "{with:?}");
    assert_eq!(with.drains_avoided, 6 * o.hosts, "{with:?}");
    assert!(with.host_hours_out < without.host_hours_out / 3.0, "{with:?} {without:?}");
}
