//! Text and JSON renderings of results, for the terminal.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use ecs_patchd::check::Preview;
use ecs_patchd::cycle::{Cycle, State};
use ecs_patchd::livepatch::deferral::LivePatches;
use ecs_patchd::packages::Releases;
use ecs_patchd::report::systemd::DaemonStatus;
use ecs_patchd::sim::{Progress, Report};

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn when(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The closing line of `run`: outcome, total time, time out of service.
pub fn run_summary(cycle: &Cycle, now: SystemTime) -> String {
    let mut line = format!("{} (cycle {}, total {}", cycle.state.summary(), cycle.id, secs(cycle.duration(now)));
    if let Some(out) = cycle.out_of_service(now) {
        let _ = write!(line, ", out of service {}", secs(out));
    }
    line.push(')');
    if let Some(taken_up) = &cycle.taken_up {
        let _ = write!(line, "\n{taken_up}");
    }
    line
}

/// `check` as text.
pub fn preview(p: &Preview) -> String {
    let id = &p.identity;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "instance   {} ({}, account {})",
        id.instance.instance_id, id.instance.availability_zone, id.instance.account_id
    );
    let _ = writeln!(s, "cluster    {}", id.cluster);
    let _ = writeln!(
        s,
        "container  {} ({}, agent {}, {} task(s))",
        id.container_instance_arn,
        p.instance_status.as_deref().unwrap_or("not registered"),
        match p.agent_connected {
            Some(true) => "connected",
            Some(false) => "disconnected",
            None => "unknown",
        },
        p.tasks.unwrap_or(0)
    );
    if let Some(by) = &p.drained_by {
        let _ = writeln!(s, "           drained by ecs-patchd cycle {by}");
    }
    let _ = writeln!(s, "agent      {}", id.agent_version.as_deref().unwrap_or("not answering"));
    let f = &p.filters;
    let _ = writeln!(
        s,
        "packages   {}: security only {}, exclude [{}], min age {}, drain {}",
        p.package_manager,
        if f.security_only { "yes" } else { "no" },
        f.exclude.join(", "),
        humantime::format_duration(f.min_age),
        kebab(&f.drain)
    );
    let _ = writeln!(s, "release    policy {}; {}", kebab(&p.release_policy), releases(p.plan.releases.as_ref()));
    if let Some(newer) = &p.release_available {
        let _ = writeln!(s, "pending    release {newer} is published and not applied: its fixes are pending");
    }
    for u in &p.rebooting_updaters {
        let _ = writeln!(s, "conflict   {} reboots by itself ({}), bypassing the drain", u.name, u.because);
    }
    let plan = &p.plan;
    let _ = writeln!(s, "updates    {} to install: {} ({})", plan.updates.len(), kebab(&plan.class), plan.why);
    for u in &plan.updates {
        let flag = if u.security { " [security]" } else { "" };
        match &u.current {
            Some(current) => writeln!(s, "             {} {current} -> {}{flag}", u.name, u.available),
            None => writeln!(s, "             {} -> {}{flag}", u.name, u.available),
        }
        .expect("writing to a String");
    }
    for h in &p.held {
        let _ = writeln!(s, "held       {} {}: {}", h.name, h.available, h.why);
    }
    if let Some(live) = &plan.livepatch {
        s.push_str(&live_patches(live));
    }
    let now = match &p.reboot_needed_now {
        Some(need) => format!("{} ({})", if need.needed { "yes" } else { "no" }, need.reason),
        None => "unknown".into(),
    };
    let _ = writeln!(
        s,
        "reboot     policy {}, probe {}, runtime updates {}; needed now: {now}",
        kebab(&p.reboot_policy),
        kebab(&p.reboot_probe),
        kebab(&p.runtime_policy)
    );
    for note in &p.runtime_updated_in_place {
        let _ = writeln!(s, "warning    {note}");
    }
    let _ = writeln!(s, "coordinate {}", kebab(&p.coordination_backend));
    let _ = writeln!(s, "window     {}", p.window.describe);
    let _ = writeln!(s, "run would  {}", p.verdict);
    s
}

/// The running kernel's live patches, the CVEs they cover and the kernel that waits (or why
/// it does not).
fn live_patches(live: &LivePatches) -> String {
    let mut s = String::new();
    let loaded = if live.loaded.is_empty() { "none".to_string() } else { live.loaded.join(", ") };
    let _ = writeln!(s, "livepatch  {} on kernel {}: loaded {loaded}", live.tool, live.kernel);
    if !live.installing.is_empty() {
        let _ = writeln!(s, "           installs {} while the tasks run", live.installing.join(", "));
    }
    let _ = writeln!(s, "           covers {} CVE(s): {}", live.cves.len(), short_list(&live.cves));
    if let Some(d) = &live.deferred {
        let _ = writeln!(
            s,
            "kernel     {} pending since {}: its reboot waits until {} (fixes {})",
            d.packages.join(", "),
            when(d.since),
            when(d.deadline),
            short_list(&d.cves)
        );
    } else if let Some(why) = &live.reboot_now {
        let _ = writeln!(s, "kernel     pending, drains and reboots: {why}");
    }
    s
}

/// At most ten items, then how many more.
fn short_list(items: &[String]) -> String {
    let shown = items.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
    match items.len() {
        0 => "none".into(),
        n if n > 10 => format!("{shown} and {} more", n - 10),
        _ => shown,
    }
}

/// The releases a plan found, in one line.
fn releases(found: Option<&Releases>) -> String {
    match found {
        Some(r) => format!(
            "runs {}, newest {}, installs from {}",
            r.running,
            r.newest.as_deref().unwrap_or("unknown"),
            r.target.as_deref().unwrap_or("the locked release")
        ),
        None => "no versioned repositories".into(),
    }
}

/// A setting's value as it is written in the configuration.
fn kebab(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default().trim_matches('"').to_string()
}

/// `status` as text.
pub fn status(
    cycle: Option<&Cycle>,
    daemon: Option<&DaemonStatus>,
    live: Option<&LivePatches>,
    now: SystemTime,
) -> String {
    let mut s = String::new();
    if let Some(live) = live {
        s.push_str(&live_patches(live));
    }
    match daemon {
        Some(d) => {
            let _ = writeln!(s, "daemon     pid {}: {}", d.pid, d.activity);
            if let Some(at) = d.next_check {
                let _ = writeln!(s, "           next check {}", when(at));
            }
            if let Some(at) = d.next_window {
                let _ = writeln!(s, "           next window opens {}", when(at));
            }
        }
        None => s.push_str("daemon     not running\n"),
    }
    let Some(c) = cycle else {
        s.push_str("no cycle has run yet\n");
        return s;
    };
    let _ = writeln!(s, "cycle      {}", c.id);
    let _ = writeln!(s, "host       {} in cluster {}", c.instance_id, c.cluster);
    let since = now.duration_since(c.entered_at).unwrap_or_default();
    let _ = writeln!(s, "step       {} (since {}, {} ago)", c.state.name(), when(c.entered_at), secs(since));
    let result = if c.state.is_done() { c.state.summary() } else { "in progress".into() };
    let _ = writeln!(s, "result     {result}");
    if let Some(plan) = c.state.plan() {
        let _ = writeln!(s, "plan       {} update(s), {}: {}", plan.updates.len(), kebab(&plan.class), plan.why);
    }
    if c.releases.is_some() {
        let _ = writeln!(s, "release    {}", releases(c.releases.as_ref()));
    }
    if let Some(out) = c.out_of_service(now) {
        let _ = writeln!(s, "out of service {} of {} in all", secs(out), secs(c.duration(now)));
    }
    for m in &c.history {
        let _ = writeln!(s, "  {}  {}", when(m.at), m.step);
    }
    s
}

/// `status --json`: the journal record plus derived figures.
pub fn status_json(
    cycle: Option<&Cycle>,
    daemon: Option<&DaemonStatus>,
    live: Option<&LivePatches>,
    now: SystemTime,
) -> String {
    let mut value = match cycle {
        None => serde_json::json!({ "cycle": null }),
        Some(c) => serde_json::json!({
            "cycle": c,
            "step": c.state.name(),
            "finished": matches!(c.state, State::Done { .. }),
            "summary": c.state.summary(),
            "total_seconds": c.duration(now).as_secs_f64(),
            "out_of_service_seconds": c.out_of_service(now).map(|d| d.as_secs_f64()),
        }),
    };
    value["daemon"] = serde_json::to_value(daemon).expect("status serializes");
    value["livepatch"] = serde_json::to_value(live).expect("status serializes");
    serde_json::to_string_pretty(&value).expect("status serializes")
}

fn minutes(seconds: f64) -> String {
    format!("{}m{:02}s", (seconds / 60.0).floor(), (seconds % 60.0).round() as u64 % 60)
}

/// One live line of `simulate`.
pub fn sim_progress(p: &Progress) -> String {
    format!(
        "[{:>9}] waiting {:>5}  out {:>4}  finished {:>5}/{}   ",
        minutes(p.elapsed.as_secs_f64()),
        p.waiting,
        p.out,
        p.finished,
        p.hosts
    )
}

/// `simulate --livepatch-misses`: the same roll without and with live patching.
pub fn live_patch_comparison(without: &Report, with: &Report) -> String {
    let o = &with.options;
    let (misses, within) = o.livepatch.map_or((0, None), |l| (l.misses, l.reboot_within));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "live patching  {} weeks, a kernel fix every {} week(s), one in {misses} without a live patch, \
         kernels wait up to {}:",
        o.weeks,
        o.kernel_every,
        within.map_or("-".into(), |d| humantime::format_duration(d).to_string())
    );
    let _ = writeln!(s, "               {:<24} {:>7} {:>26}", "", "drains", "host-hours out of service");
    for (label, r) in [("without live patching", without), ("with live patching", with)] {
        let _ = writeln!(s, "               {label:<24} {:>7} {:>26.1}", r.drains, r.host_hours_out);
    }
    let avoided = without.drains.saturating_sub(with.drains);
    let share = if without.drains == 0 { 0.0 } else { 100.0 * avoided as f64 / without.drains as f64 };
    let _ = writeln!(
        s,
        "               drains avoided {avoided} ({share:.0}%), host-hours saved {:.1}",
        without.host_hours_out - with.host_hours_out
    );
    s
}

/// The summary of `simulate`.
pub fn sim_report(r: &Report, wall: Duration) -> String {
    let o = &r.options;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "simulated {} hosts ({} tasks each, {} zones), max_unavailable {} = {}, seed {}, in {:.1}s of real time",
        o.hosts,
        o.tasks_per_host,
        o.zones,
        o.max_unavailable,
        r.budget,
        o.seed,
        wall.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "outcome        {} patched, {} failed, {} gave up waiting, {} stopped by the pause, {} never came back",
        r.patched, r.failed, r.gave_up_waiting, r.stopped_by_pause, r.dead
    );
    if let Some(why) = &r.paused {
        let _ = writeln!(s, "paused         {why}");
    }
    let _ = writeln!(
        s,
        "makespan       {} (ideal ceil({}/{}) x {} = {}), ratio {:.3}",
        minutes(r.makespan_s),
        o.hosts,
        r.budget,
        minutes(r.slot_time_s),
        minutes(r.ideal_makespan_s),
        r.ratio
    );
    let _ = writeln!(s, "peak out       {} host(s) at once", r.peak_out);
    if o.weeks > 1 {
        let _ = writeln!(
            s,
            "weeks          {} (a kernel every {}): {} cycles patched, {} drained, {} drains avoided (in place)",
            o.weeks, o.kernel_every, r.cycles_patched, r.drains, r.drains_avoided
        );
    }
    let _ = writeln!(
        s,
        "out of service {} per host on average, {} at most",
        minutes(r.out_of_service_mean_s),
        minutes(r.out_of_service_max_s)
    );
    let _ = writeln!(
        s,
        "API calls      {:.1} ECS reads, {:.1} ECS writes, {:.1} lease-store operations per host",
        r.ecs_reads_per_host, r.ecs_writes_per_host, r.store_ops_per_host
    );
    let _ = writeln!(
        s,
        "ECS read rate  peak {} in one second, {:.2}/s over 10 s, {:.2}/s over 60 s",
        r.peak_ecs_reads_1s, r.peak_ecs_reads_10s, r.peak_ecs_reads_60s
    );
    let u = &r.store;
    let _ = writeln!(
        s,
        "DynamoDB       peak {:.1} RCU/s on one key ({}), {:.1} WCU/s on one key ({}); largest item {:.1} KB ({}); \
         {} throttled, {} refused as too large; {:.0} RRU + {:.0} WRU = ${:.4} on demand",
        u.peak_read_units_per_key.0,
        u.peak_read_units_per_key.1,
        u.peak_write_units_per_key.0,
        u.peak_write_units_per_key.1,
        u.largest_item.0 as f64 / 1024.0,
        u.largest_item.1,
        u.throttled,
        u.too_large,
        u.read_units,
        u.write_units,
        r.store_dollars
    );
    if r.failed_runs > 0 {
        let _ = writeln!(
            s,
            "failed runs    {} (stopped on an error, resumed a minute later as the daemon does)",
            r.failed_runs
        );
    }
    let _ = writeln!(
        s,
        "while waiting  {} ECS read(s) by the first two of the queue (snapshots, services checks), {} by hosts behind them; {} snapshot reads in all",
        r.ecs_reads_by_queue_head, r.ecs_reads_behind_queue_head, r.snapshot_reads
    );
    let _ = writeln!(
        s,
        "invariants     unplaceable tasks {}, installs beside live tasks {}, slots granted after the pause {}, \
         during the alarm {}, live hosts left DRAINING {}",
        r.unplaceable_tasks, r.installs_beside_live_tasks, r.grants_after_pause, r.grants_during_alarm, r.left_draining
    );
    s
}
