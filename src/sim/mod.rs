//! `ecs-patchd simulate`: the real cycle and lease code for N hosts against a simulated
//! cluster (ECS with a service scheduler, package repositories, reboots, a lease store with
//! DynamoDB's conditional semantics) on a virtual clock, so hundreds of hosts finish in
//! seconds. Each host runs [`crate::cycle::Machine`] with its own journal, exactly as the
//! daemon does; a reboot or a crash drops the running cycle, which resumes from the journal.

pub mod clock;
pub mod kernels;
pub mod ports;
pub mod store;
pub mod world;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::config::MaxUnavailable;
use crate::config::Settings;
use crate::coordination::policy::{Budget, Pause};
use crate::coordination::store::items::{Control, Slot};
use crate::coordination::store::{StalePolicy, StoreCoordinator};
use crate::coordination::{self};
use crate::cycle::machine::{Machine, Ports};
use crate::cycle::{Cycle, Outcome, State};
use crate::error::{Error, Kind, Result};
use crate::identity::{Identity, InstanceDocument};
use crate::journal::Journal;
use clock::SimClock;
use ports::{Power, SimAgent, SimEcs, SimHooks, SimHost, SimLifecycle, SimPackages, Timings};
use store::{Limits, MemoryStore, Usage};
use world::{Dice, InQueue, World, WorldState};

/// Probabilities, per host, of each fault.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Faults {
    /// The daemon is killed once at a random moment and restarted.
    pub crash: f64,
    /// The install fails.
    pub failed_install: f64,
    /// Tasks take ten times longer to leave.
    pub slow_drain: f64,
    /// The host reboots and never comes back.
    pub never_returns: f64,
    /// Share of lease-store requests DynamoDB throttles (fleet-wide, not per host).
    pub throttling: f64,
    /// ECS throttles every write of every host for this long from the start.
    pub ecs_outage: Duration,
    /// When the host comes back, its service is slow to recover (a task short for 20 minutes).
    pub slow_recovery: f64,
    /// Every week's update is an ECS agent release alone (installed in place) whose agent
    /// never connects once restarted.
    pub bad_agent_release: bool,
}

/// What to simulate.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// Hosts in the cluster.
    pub hosts: usize,
    /// Service tasks per host.
    pub tasks_per_host: usize,
    /// Hosts that also run a task of a service with a static host port (one per host).
    pub edge_hosts: usize,
    /// Availability zones.
    pub zones: usize,
    /// Hosts allowed out at once.
    #[serde(serialize_with = "display")]
    pub max_unavailable: Budget,
    /// Share that must stay in service.
    pub min_healthy_percent: u32,
    /// One zone at a time.
    pub one_az_at_a_time: bool,
    /// Stale leases: pause or reclaim.
    pub on_stale_lease: StalePolicy,
    /// Seed of every random choice.
    pub seed: u64,
    /// Hosts start at random within this time (as the systemd timer's random delay does).
    pub start_within: Duration,
    /// Fault rates.
    pub faults: Faults,
    /// Weekly rolls to run, one after the other.
    pub weeks: usize,
    /// One week in this many carries a kernel (the first does); the others carry a
    /// userland update, installed in place without a drain.
    pub kernel_every: usize,
    /// A watched CloudWatch alarm fires during this window (from, to) of the first week.
    #[serde(serialize_with = "window_secs")]
    pub alarm: Option<(Duration, Duration)>,
    /// Kernel fixes carried from week to week, most covered by live patches, when given.
    pub livepatch: Option<kernels::LivePatchRun>,
}

fn window_secs<S: serde::Serializer>(w: &Option<(Duration, Duration)>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(w.iter().flat_map(|(a, b)| [a.as_secs(), b.as_secs()]))
}

/// After a failed run, the daemon tries again this long after (its first retry).
const RUN_RETRY: Duration = Duration::from_secs(60);
/// Failed runs per host before the simulation gives up (a bug, not bad luck).
const MAX_FAILED_RUNS: usize = 20;

/// The time between two weekly rolls.
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

fn display<S: serde::Serializer>(budget: &Budget, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(budget)
}

/// How the roll is going, for live display.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Virtual time since the start.
    pub elapsed: Duration,
    /// Hosts queued for a slot.
    pub waiting: usize,
    /// Hosts out of service now.
    pub out: usize,
    /// Hosts finished.
    pub finished: usize,
    /// All hosts.
    pub hosts: usize,
}

/// What a simulation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The options it ran with.
    pub options: Options,
    /// Hosts allowed out at once.
    pub budget: usize,
    /// From the first drain to the last release (seconds); over several weeks, the longest
    /// weekly roll.
    pub makespan_s: f64,
    /// Mean time a drained host was out of service, over every week (seconds).
    pub slot_time_s: f64,
    /// ceil(hosts / budget) × mean slot time (seconds).
    pub ideal_makespan_s: f64,
    /// makespan / ideal.
    pub ratio: f64,
    /// Most hosts out of service at once.
    pub peak_out: usize,
    /// Mean and longest time a host was out of service (seconds).
    pub out_of_service_mean_s: f64,
    /// Longest time out of service (seconds).
    pub out_of_service_max_s: f64,
    /// ECS reads per host.
    pub ecs_reads_per_host: f64,
    /// ECS writes per host.
    pub ecs_writes_per_host: f64,
    /// Lease-store operations per host.
    pub store_ops_per_host: f64,
    /// Most ECS reads in one second, fleet-wide.
    pub peak_ecs_reads_1s: usize,
    /// Most ECS reads per second over a 10-second window, fleet-wide.
    pub peak_ecs_reads_10s: f64,
    /// Most ECS reads per second over a 60-second window, fleet-wide.
    pub peak_ecs_reads_60s: f64,
    /// The reads of that busiest 10-second window, by call.
    pub peak_window_calls: std::collections::BTreeMap<String, usize>,
    /// Every read, by call, per host.
    pub reads_per_host_by_call: std::collections::BTreeMap<String, f64>,
    /// When that window began (seconds of virtual time).
    pub peak_window_at_s: u64,
    /// ECS reads made by the first two hosts of the slot queue (cluster snapshot refreshes,
    /// the check of their services).
    pub ecs_reads_by_queue_head: usize,
    /// ECS reads made by hosts further back in the queue, which are only waiting, other than
    /// their share of the snapshot refreshes (0 unless a stale lease under `reclaim` made one
    /// describe the dead holder).
    pub ecs_reads_behind_queue_head: usize,
    /// ECS reads taking the cluster snapshots (by the head, or a host one to three budgets back).
    pub snapshot_reads: usize,
    /// Hosts whose journal says patched.
    pub patched: usize,
    /// Hosts the simulated world shows patched, ACTIVE and connected at the end.
    pub patched_in_service: usize,
    /// Hosts whose journal says patched but the world does not agree (must be 0).
    pub patched_claims_untrue: usize,
    /// Fewest hosts in service at once, as the world saw it.
    pub lowest_in_service: usize,
    /// Most availability zones with a host out of service at once.
    pub most_zones_out: usize,
    /// Hosts still holding a slot in the lease at the end.
    pub lease_holders_at_end: Vec<String>,
    /// Hosts that never came back.
    pub dead_hosts: Vec<String>,
    /// Hosts still queued for a slot in the lease at the end.
    pub lease_queue_at_end: usize,
    /// Hosts whose cycle failed while holding a slot (each must pause the roll).
    pub failed: usize,
    /// Hosts that got no slot within the wait timeout (budget or capacity never allowed it),
    /// or deferred at the drain, before any change.
    pub gave_up_waiting: usize,
    /// Hosts that stopped because the roll was paused.
    pub stopped_by_pause: usize,
    /// Hosts that never came back.
    pub dead: usize,
    /// Why the roll is paused, if it is.
    pub paused: Option<String>,
    /// Service tasks that found no room (the capacity guard must keep this at 0).
    pub unplaceable_tasks: u64,
    /// Installs begun while a task was still on the host, even one shutting down (must be 0).
    pub installs_beside_live_tasks: u64,
    /// Slots granted after the pause (must be 0).
    pub grants_after_pause: usize,
    /// Drains begun while the watched alarm was firing (must be 0).
    pub grants_during_alarm: usize,
    /// Live hosts left DRAINING by ecs-patchd (must be 0).
    pub left_draining: usize,
    /// Cycles that patched a host, over every week.
    pub cycles_patched: usize,
    /// Of those, the cycles that drained the host.
    pub drains: usize,
    /// Of those, the cycles that installed in place, without a drain.
    pub drains_avoided: usize,
    /// Hours out of service, summed over every host and week.
    pub host_hours_out: f64,
    /// Runs that stopped on an error and were tried again later, as the daemon does.
    pub failed_runs: usize,
    /// What the lease store (DynamoDB, simulated) was asked and charged.
    pub store: Usage,
    /// The on-demand cost of that, in dollars.
    pub store_dollars: f64,
}

/// The lease as the simulation left it, read without charge.
struct LeaseEnd {
    paused: Option<Pause>,
    holders: Vec<String>,
    waiting: u64,
}

impl LeaseEnd {
    fn read(store: &MemoryStore) -> Self {
        let key = world::lease_key();
        let control: Control = store.get(&key).and_then(|v| serde_json::from_str(&v.body).ok()).unwrap_or_default();
        let holders = (0..control.slots)
            .filter_map(|n| store.get(&format!("{key}/slot/{n}")))
            .filter_map(|v| serde_json::from_str::<Slot>(&v.body).ok())
            .filter_map(|s| s.holder.map(|h| h.id))
            .collect();
        let taken = store.get(&format!("{key}/tickets")).map_or(0, |v| v.version);
        // Tickets whose host still waits (a withdrawn one is gone, though not yet served).
        let waiting =
            (control.served + 1..=taken).filter(|t| store.get(&format!("{key}/ticket/{t}")).is_some()).count();
        Self { paused: control.paused, holders, waiting: waiting as u64 }
    }
}

struct HostOutcome {
    /// The cycle of each week the host lived through.
    cycles: Vec<Cycle>,
    dead: bool,
}

impl HostOutcome {
    /// The last week's cycle.
    fn cycle(&self) -> Option<&Cycle> {
        self.cycles.last()
    }
}

/// Runs the simulation on a fresh virtual clock; `progress` is called every virtual minute.
pub fn simulate(options: &Options, progress: &mut dyn FnMut(&Progress)) -> Result<Report> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| Error::Host(format!("cannot start the simulation runtime: {e}")))?;
    runtime.block_on(run(options, progress))
}

/// The simulated cluster's name.
fn settings() -> Settings {
    let mut s = Settings::default();
    // The simulated fleet shares the store below.
    s.coordination.backend = crate::config::Backend::Dynamodb;
    s.host.reboot_timeout = Duration::from_secs(600);
    s.host.agent_reconnect_timeout = Duration::from_secs(600);
    s.coordination.recovery_timeout = Duration::from_secs(10 * 60);
    s.coordination.poll = Duration::from_secs(10);
    s.coordination.lease_ttl = Duration::from_secs(15 * 60);
    // The largest rolls (5,000 hosts, 100 at a time) take about six hours.
    s.coordination.wait_timeout = Duration::from_secs(24 * 3600);
    s
}

async fn run(options: &Options, progress: &mut dyn FnMut(&Progress)) -> Result<Report> {
    let timings = Timings::default();
    let mut dice = Dice::new(options.seed);
    let world: World =
        Arc::new(Mutex::new(WorldState::new(options.hosts, options.tasks_per_host, options.zones, options.edge_hosts)));
    world.lock().expect("world").ecs_refused_until =
        u64::try_from(options.faults.ecs_outage.as_millis()).unwrap_or(u64::MAX);
    let clock = Arc::new(SimClock::new(dice.seed()));
    let limits = Limits { random_throttling: options.faults.throttling, ..Limits::default() };
    let store = Arc::new(MemoryStore::new(Arc::clone(&world), Arc::clone(&clock), limits));
    let mut settings = settings();
    if let Some(run) = options.livepatch {
        let fixes = world::KernelFixes { every: options.kernel_every, misses: run.misses };
        world.lock().expect("world").kernel_fixes = Some(fixes);
        settings.packages.kernel_reboot_within = run.reboot_within;
    }
    let c = &mut settings.coordination;
    c.max_unavailable = MaxUnavailable::Text(options.max_unavailable.to_string());
    c.min_healthy_percent = options.min_healthy_percent;
    c.one_az_at_a_time = options.one_az_at_a_time;
    c.on_stale_lease = options.on_stale_lease;
    let alarms = options.alarm.map(|(from, to)| {
        Arc::new(ports::SimAlarms { clock: Arc::clone(&clock), from, to }) as Arc<dyn crate::alarms::Alarms>
    });
    let coordinator = Arc::new(
        StoreCoordinator::new(
            Arc::clone(&store) as Arc<dyn crate::coordination::store::LeaseStore>,
            Arc::clone(&clock) as Arc<dyn crate::clock::Clock>,
            coordination::backend::store_settings(&settings.coordination, world::CLUSTER),
        )
        .with_alarms(alarms),
    );
    let state_root = tempfile::Builder::new()
        .prefix("ecs-patchd-sim.")
        .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" })
        .map_err(|e| Error::Host(format!("cannot create the simulation's state directory: {e}")))?;
    let finished = Arc::new(Mutex::new(0usize));
    let failed_runs = Arc::new(Mutex::new(0usize));
    let started = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for host in 0..options.hosts {
        let faults = HostFaults {
            start_at: options.start_within.mul_f64(dice.unit()),
            crash_at: dice.chance(options.faults.crash).then(|| Duration::from_secs_f64(dice.unit() * 900.0)),
            fails: dice.chance(options.faults.failed_install),
            never_returns: dice.chance(options.faults.never_returns),
        };
        if dice.chance(options.faults.slow_drain) {
            world.lock().expect("world").instances[host].slow_factor = 10;
        }
        if dice.chance(options.faults.slow_recovery) {
            world.lock().expect("world").instances[host].slow_recovery = true;
        }
        world.lock().expect("world").instances[host].bad_agent = options.faults.bad_agent_release;
        let context = HostContext {
            host,
            store: Arc::clone(&store),
            world: Arc::clone(&world),
            clock: Arc::clone(&clock),
            coordinator: Arc::clone(&coordinator),
            settings: settings.clone(),
            dir: state_root.path().join(format!("host-{host}")),
            timings,
            faults,
            finished: Arc::clone(&finished),
            failed_runs: Arc::clone(&failed_runs),
            started,
            weeks: options.weeks,
            kernel_every: options.kernel_every,
        };
        handles.push(tokio::spawn(host_main(context)));
    }
    let scheduler = {
        let (world, clock) = (Arc::clone(&world), Arc::clone(&clock));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                world.lock().expect("world").schedule(clock.elapsed_ms(), timings.task_move, timings.deactivation);
            }
        })
    };
    while *finished.lock().expect("count") < options.hosts {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let w = world.lock().expect("world");
        progress(&Progress {
            elapsed: Duration::from_millis(clock.elapsed_ms()),
            waiting: usize::try_from(LeaseEnd::read(&store).waiting).unwrap_or(usize::MAX),
            out: w.instances.iter().filter(|i| i.status != "ACTIVE" || !i.agent_up).count(),
            finished: *finished.lock().expect("count"),
            hosts: options.hosts,
        });
    }
    scheduler.abort();
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(handle.await.map_err(|e| Error::Host(format!("a simulated host panicked: {e}")))??);
    }
    let lease = LeaseEnd::read(&store);
    let mut report = report(options, &world.lock().expect("world"), &outcomes, &lease, &clock);
    report.store = store.usage();
    report.failed_runs = *failed_runs.lock().expect("count");
    report.store_dollars = report.store.dollars(&store.limits());
    Ok(report)
}

struct HostFaults {
    start_at: Duration,
    crash_at: Option<Duration>,
    fails: bool,
    never_returns: bool,
}

struct HostContext {
    host: usize,
    store: Arc<MemoryStore>,
    world: World,
    clock: Arc<SimClock>,
    coordinator: Arc<StoreCoordinator>,
    settings: Settings,
    dir: PathBuf,
    timings: Timings,
    faults: HostFaults,
    finished: Arc<Mutex<usize>>,
    /// Runs that stopped on an error, fleet-wide.
    failed_runs: Arc<Mutex<usize>>,
    /// When the simulation began (virtual), and how many weeks it runs.
    started: tokio::time::Instant,
    weeks: usize,
    kernel_every: usize,
}

/// One host: runs the daemon's cycle; when the machine reboots or the daemon crashes, the
/// running cycle is dropped (as kill -9 would) and resumed from its journal after boot.
async fn host_main(ctx: HostContext) -> Result<HostOutcome> {
    let outcome = host_life(&ctx).await;
    *ctx.finished.lock().expect("count") += 1;
    outcome
}

async fn host_life(ctx: &HostContext) -> Result<HostOutcome> {
    let (power_tx, mut power) = mpsc::unbounded_channel();
    let boot_id = Arc::new(Mutex::new(format!("boot-{}-0", ctx.host)));
    if let Some(at) = ctx.faults.crash_at {
        let tx = power_tx.clone();
        let start_at = ctx.faults.start_at;
        tokio::spawn(async move {
            tokio::time::sleep(start_at + at).await;
            let _ = tx.send(Power::Crash);
        });
    }
    let identity = {
        let w = ctx.world.lock().expect("world");
        let i = &w.instances[ctx.host];
        Identity {
            instance: InstanceDocument {
                instance_id: i.id.clone(),
                region: "sim".into(),
                availability_zone: i.availability_zone.clone(),
                account_id: "000000000000".into(),
            },
            cluster: "sim".into(),
            container_instance_arn: i.arn.clone(),
            agent_version: Some(i.agent_version.clone()),
        }
    };
    let mut boots = 0u32;
    let mut failed_runs = 0;
    let mut cycles = Vec::new();
    let began = ctx.clock.now();
    for week in 0..ctx.weeks.max(1) {
        let week_starts = WEEK * u32::try_from(week).unwrap_or(u32::MAX) + ctx.faults.start_at;
        tokio::time::sleep_until(ctx.started + week_starts).await;
        {
            let mut w = ctx.world.lock().expect("world");
            let instance = &mut w.instances[ctx.host];
            instance.patched = false;
            instance.kernel_week = week % ctx.kernel_every.max(1) == 0;
            instance.week = week;
        }
        let since = began + week_starts;
        loop {
            let ports = Ports {
                ecs: Box::new(SimEcs {
                    world: Arc::clone(&ctx.world),
                    host: ctx.host,
                    clock: Arc::clone(&ctx.clock),
                    store: Arc::clone(&ctx.store),
                }),
                agent: Box::new(SimAgent { world: Arc::clone(&ctx.world), host: ctx.host }),
                packages: Box::new(SimPackages {
                    world: Arc::clone(&ctx.world),
                    host: ctx.host,
                    fails: ctx.faults.fails,
                    timings: ctx.timings,
                    clock: Arc::clone(&ctx.clock),
                }),
                live: Box::new(kernels::SimLivePatching { world: Arc::clone(&ctx.world), host: ctx.host }),
                host: Box::new(SimHost {
                    world: Arc::clone(&ctx.world),
                    host: ctx.host,
                    boot_id: Arc::clone(&boot_id),
                    power: power_tx.clone(),
                    timings: ctx.timings,
                    clock: Arc::clone(&ctx.clock),
                }),
                clock: Arc::clone(&ctx.clock) as Arc<dyn crate::clock::Clock>,
                coordinator: Arc::clone(&ctx.coordinator) as Arc<dyn crate::coordination::Coordinator>,
                lifecycle: Box::new(SimLifecycle),
                hooks: Box::new(SimHooks),
                reporter: Box::new(crate::report::Silent),
            };
            let journal = Journal::open(&ctx.dir)?;
            let machine = Machine::new(&ports, &ctx.settings, &journal);
            let existing = journal.load::<Cycle>()?;
            let run = async {
                match existing {
                    Some(cycle) if cycle.state.is_done() && cycle.started_at >= since => Ok(cycle),
                    Some(cycle) if !cycle.state.is_done() => machine.resume(cycle).await,
                    _ => machine.start(&identity).await,
                }
            };
            let event = tokio::select! {
                result = run => match result {
                    Ok(cycle) => {
                        cycles.push(cycle);
                        break;
                    }
                    // A run that stopped on an error (the lease store throttled beyond the
                    // SDK's retries, say): the daemon tries again later, from the journal.
                    Err(e) if failed_runs < MAX_FAILED_RUNS => {
                        tracing::warn!(host = ctx.host, "the run failed, trying again later: {e}");
                        failed_runs += 1;
                        *ctx.failed_runs.lock().expect("count") += 1;
                        drop(machine);
                        drop(journal);
                        tokio::time::sleep(RUN_RETRY).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                event = power.recv() => event,
            };
            drop(machine);
            drop(journal);
            match event {
                Some(Power::Reboot) if ctx.faults.never_returns => {
                    let mut w = ctx.world.lock().expect("world");
                    w.instances[ctx.host].dead = true;
                    return Ok(HostOutcome { cycles, dead: true });
                }
                Some(Power::Reboot) => {
                    tokio::time::sleep(ctx.timings.boot).await;
                    boots += 1;
                    *boot_id.lock().expect("boot id") = format!("boot-{}-{boots}", ctx.host);
                }
                Some(Power::Crash) | None => tokio::time::sleep(ctx.timings.restart).await,
            }
        }
    }
    Ok(HostOutcome { cycles, dead: false })
}

/// A cycle that ended changing nothing: no slot in time, or deferred before the drain.
fn deferred(kind: &Kind, step: &str) -> bool {
    *kind == Kind::Deferred || (*kind != Kind::Paused && step == "waiting-for-slot")
}

fn report(options: &Options, w: &WorldState, outcomes: &[HostOutcome], lease: &LeaseEnd, clock: &SimClock) -> Report {
    let budget = options.max_unavailable.resolve(options.hosts);
    let cycles: Vec<&Cycle> = outcomes.iter().filter_map(HostOutcome::cycle).collect();
    let every_week: Vec<&Cycle> = outcomes.iter().flat_map(|o| &o.cycles).collect();
    let patched_cycles: Vec<&&Cycle> =
        every_week.iter().filter(|c| matches!(c.state, State::Done { outcome: Outcome::Patched { .. } })).collect();
    let drains = patched_cycles.iter().filter(|c| c.history.iter().any(|m| m.step == "draining")).count();
    let end = clock.now();
    let slot_times: Vec<f64> =
        patched_cycles.iter().filter_map(|c| c.out_of_service(end)).map(|d| d.as_secs_f64()).collect();
    // The longest weekly roll: from its first drain to the end of its last cycle.
    let weeks = outcomes.iter().map(|o| o.cycles.len()).max().unwrap_or(0);
    let makespan = (0..weeks)
        .filter_map(|week| {
            let of_week: Vec<&Cycle> = outcomes.iter().filter_map(|o| o.cycles.get(week)).collect();
            let first =
                of_week.iter().filter_map(|c| c.history.iter().find(|m| m.step == "draining")).map(|m| m.at).min()?;
            let last =
                of_week.iter().filter_map(|c| c.history.iter().find(|m| m.step == "done")).map(|m| m.at).max()?;
            Some(last.duration_since(first).unwrap_or_default().as_secs_f64())
        })
        .fold(0.0, f64::max);
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    let slot_time = mean(&slot_times);
    let ideal = options.hosts.div_ceil(budget) as f64 * slot_time;
    let outs: Vec<f64> =
        w.out_of_service.iter().flatten().filter_map(|(a, b)| b.map(|b| (b - a) as f64 / 1000.0)).collect();
    let mut per_second = std::collections::BTreeMap::<u64, usize>::new();
    for (ms, ..) in &w.reads {
        *per_second.entry(ms / 1000).or_default() += 1;
    }
    let peak_1s = per_second.values().copied().max().unwrap_or(0);
    let busiest = |window: u64| {
        per_second
            .keys()
            .map(|&s| (s, per_second.range(s..s + window).map(|(_, n)| n).sum::<usize>() as f64 / window as f64))
            .fold((0, 0.0), |best, next| if next.1 > best.1 { next } else { best })
    };
    let (peak_start, peak_10s) = busiest(10);
    let peak_60s = busiest(60).1;
    let mut reads_per_host_by_call = std::collections::BTreeMap::<String, f64>::new();
    for (.., operation) in &w.reads {
        *reads_per_host_by_call.entry(operation.to_string()).or_default() += 1.0 / options.hosts as f64;
    }
    let mut peak_window_calls = std::collections::BTreeMap::new();
    for (ms, _, _, operation) in &w.reads {
        if (peak_start..peak_start + 10).contains(&(ms / 1000)) {
            *peak_window_calls.entry(operation.to_string()).or_default() += 1;
        }
    }
    let count = |f: &dyn Fn(&Outcome) -> bool| {
        cycles.iter().filter(|c| matches!(&c.state, State::Done { outcome } if f(outcome))).count()
    };
    let paused_at = lease.paused.as_ref().map(|p| p.at);
    let grants_after_pause = paused_at.map_or(0, |at| {
        cycles
            .iter()
            .filter_map(|c| c.history.iter().find(|m| m.step == "draining"))
            .filter(|m| crate::coordination::millis(m.at) > at)
            .count()
    });
    let began = clock.now() - Duration::from_millis(clock.elapsed_ms());
    let grants_during_alarm = options.alarm.map_or(0, |(from, to)| {
        every_week
            .iter()
            .filter_map(|c| c.history.iter().find(|m| m.step == "draining"))
            .filter(|m| m.at > began + from && m.at < began + to)
            .count()
    });
    let hosts = options.hosts as f64;
    Report {
        options: options.clone(),
        budget,
        makespan_s: makespan,
        slot_time_s: slot_time,
        ideal_makespan_s: ideal,
        ratio: if ideal > 0.0 { makespan / ideal } else { 0.0 },
        peak_out: w.peak_out,
        out_of_service_mean_s: mean(&outs),
        out_of_service_max_s: outs.iter().copied().fold(0.0, f64::max),
        ecs_reads_per_host: w.reads.len() as f64 / hosts,
        ecs_writes_per_host: w.writes.iter().sum::<u64>() as f64 / hosts,
        store_ops_per_host: w.store_ops as f64 / hosts,
        peak_ecs_reads_1s: peak_1s,
        peak_ecs_reads_10s: peak_10s,
        peak_ecs_reads_60s: peak_60s,
        peak_window_calls,
        reads_per_host_by_call,
        peak_window_at_s: peak_start,
        ecs_reads_by_queue_head: w.reads.iter().filter(|r| matches!(r.2, InQueue::Head | InQueue::Next)).count(),
        ecs_reads_behind_queue_head: w
            .reads
            .iter()
            .filter(|r| r.2 == InQueue::Behind && r.3 != ports::SNAPSHOT_READ)
            .count(),
        snapshot_reads: w.reads.iter().filter(|r| r.3 == ports::SNAPSHOT_READ).count(),
        patched: count(&|o| matches!(o, Outcome::Patched { .. })),
        patched_in_service: w.instances.iter().filter(|i| i.patched && i.status == "ACTIVE" && i.agent_up).count(),
        patched_claims_untrue: outcomes
            .iter()
            .zip(&w.instances)
            .filter(|(o, _)| {
                o.cycle().is_some_and(|c| matches!(c.state, State::Done { outcome: Outcome::Patched { .. } }))
            })
            .filter(|(_, i)| !(i.patched && i.status == "ACTIVE" && i.agent_up))
            .count(),
        lowest_in_service: w.lowest_in_service,
        most_zones_out: w.most_zones_out,
        lease_holders_at_end: lease.holders.clone(),
        lease_queue_at_end: usize::try_from(lease.waiting).unwrap_or(usize::MAX),
        dead_hosts: w.instances.iter().filter(|i| i.dead).map(|i| i.id.clone()).collect(),
        // A deferral at the drain (a task that came to the host after its turn was checked)
        // changed nothing, as giving up the wait did.
        failed: count(
            &|o| matches!(o, Outcome::Failed { kind, step, .. } if !deferred(kind, step) && *kind != Kind::Paused),
        ),
        gave_up_waiting: count(&|o| matches!(o, Outcome::Failed { kind, step, .. } if deferred(kind, step))),
        stopped_by_pause: count(&|o| matches!(o, Outcome::Failed { kind: crate::error::Kind::Paused, .. })),
        dead: outcomes.iter().filter(|o| o.dead).count(),
        paused: lease.paused.as_ref().map(|p| p.reason.clone()),
        unplaceable_tasks: w.unplaceable,
        installs_beside_live_tasks: w.installs_beside_live_tasks,
        grants_after_pause,
        grants_during_alarm,
        left_draining: w
            .instances
            .iter()
            .filter(|i| !i.dead && i.status == "DRAINING" && i.drained_by.is_some())
            .count(),
        cycles_patched: patched_cycles.len(),
        drains,
        drains_avoided: patched_cycles.len() - drains,
        host_hours_out: outs.iter().sum::<f64>() / 3600.0,
        failed_runs: 0,
        store: Usage::default(),
        store_dollars: 0.0,
    }
}
