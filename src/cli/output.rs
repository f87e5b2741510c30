//! Text and JSON renderings of results, for the terminal.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use ecs_patchd::check::Preview;
use ecs_patchd::cycle::{Cycle, State};

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn when(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The closing line of `run`: outcome, total time, time out of service.
pub fn run_summary(cycle: &Cycle, now: SystemTime) -> String {
    let mut line = format!(
        "{} (cycle {}, total {}",
        cycle.state.summary(),
        cycle.id,
        secs(cycle.duration(now))
    );
    if let Some(out) = cycle.out_of_service(now) {
        let _ = write!(line, ", out of service {}", secs(out));
    }
    line.push(')');
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
    let _ = writeln!(
        s,
        "agent      {}",
        id.agent_version.as_deref().unwrap_or("not answering")
    );
    let _ = writeln!(
        s,
        "packages   {}: {} update(s) pending{}",
        p.package_manager,
        p.pending.len(),
        if p.agent_only {
            " (ECS agent only)"
        } else {
            ""
        }
    );
    for u in &p.pending {
        match &u.current {
            Some(current) => writeln!(s, "             {} {current} -> {}", u.name, u.available),
            None => writeln!(s, "             {} -> {}", u.name, u.available),
        }
        .expect("writing to a String");
    }
    let now = match &p.reboot_needed_now {
        Some(need) => format!(
            "{} ({})",
            if need.needed { "yes" } else { "no" },
            need.reason
        ),
        None => "unknown".into(),
    };
    let _ = writeln!(
        s,
        "reboot     policy {}; needed now: {now}",
        serde_json::to_string(&p.reboot_policy)
            .unwrap_or_default()
            .trim_matches('"')
    );
    let _ = writeln!(s, "run would  {}", p.verdict);
    s
}

/// `status` as text.
pub fn status(cycle: Option<&Cycle>, now: SystemTime) -> String {
    let Some(c) = cycle else {
        return "no cycle has run yet\n".into();
    };
    let mut s = String::new();
    let _ = writeln!(s, "cycle      {}", c.id);
    let _ = writeln!(s, "host       {} in cluster {}", c.instance_id, c.cluster);
    let since = now.duration_since(c.entered_at).unwrap_or_default();
    let _ = writeln!(
        s,
        "step       {} (since {}, {} ago)",
        c.state.name(),
        when(c.entered_at),
        secs(since)
    );
    let result = if c.state.is_done() {
        c.state.summary()
    } else {
        "in progress".into()
    };
    let _ = writeln!(s, "result     {result}");
    if let Some(out) = c.out_of_service(now) {
        let _ = writeln!(
            s,
            "out of service {} of {} in all",
            secs(out),
            secs(c.duration(now))
        );
    }
    for m in &c.history {
        let _ = writeln!(s, "  {}  {}", when(m.at), m.step);
    }
    s
}

/// `status --json`: the journal record plus derived figures.
pub fn status_json(cycle: Option<&Cycle>, now: SystemTime) -> String {
    let value = match cycle {
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
    serde_json::to_string_pretty(&value).expect("status serializes")
}
