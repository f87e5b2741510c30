//! The rules that span keys, or that values must meet beyond their type: each error names
//! the file that set the key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::settings::*;
use crate::error::{Error, Result};

/// The longest a kernel may wait for its reboot (`packages.kernel_reboot_within`).
const MOST_KERNEL_WAIT: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// Checks rules that span keys or values serde cannot express.
pub(super) fn validate(s: &Settings, origins: &BTreeMap<String, PathBuf>) -> Result<()> {
    let fail = |key: &str, what: &str| {
        let place =
            origins.get(key).map(|f| format!("{}: ", f.display())).unwrap_or_else(|| "default configuration: ".into());
        Err(Error::Config(format!("{place}key `{key}`: {what}")))
    };
    let commands = [
        ("host.reboot_command", &s.host.reboot_command),
        ("host.agent_start_command", &s.host.agent_start_command),
        ("host.agent_restart_command", &s.host.agent_restart_command),
        ("host.runtime_restart_command", &s.host.runtime_restart_command),
        ("packages.livepatch.kpatch_command", &s.packages.livepatch.kpatch_command),
        ("packages.livepatch.service_check", &s.packages.livepatch.service_check),
        ("packages.livepatch.canonical_command", &s.packages.livepatch.canonical_command),
    ];
    for (key, command) in commands {
        if command.first().is_none_or(|program| program.trim().is_empty()) {
            return fail(key, "must name a program, e.g. [\"systemctl\", \"reboot\"]");
        }
    }
    let positive = [
        ("drain.timeout", s.drain.timeout),
        ("drain.poll_initial", s.drain.poll_initial),
        ("drain.poll_max", s.drain.poll_max),
        ("packages.command_timeout", s.packages.command_timeout),
        ("packages.livepatch.load_timeout", s.packages.livepatch.load_timeout),
        ("host.reboot_timeout", s.host.reboot_timeout),
        ("host.agent_reconnect_timeout", s.host.agent_reconnect_timeout),
        ("identity.agent_timeout", s.identity.agent_timeout),
    ];
    for (key, value) in positive {
        if value.is_zero() {
            return fail(key, "must be longer than zero");
        }
    }
    if s.drain.poll_initial > s.drain.poll_max {
        return fail("drain.poll_initial", "must not be longer than drain.poll_max");
    }
    if s.host.reboot_attempts == 0 {
        return fail("host.reboot_attempts", "must be at least 1");
    }
    if !(s.identity.agent_url.starts_with("http://") || s.identity.agent_url.starts_with("https://")) {
        return fail("identity.agent_url", "must be an http:// or https:// URL");
    }
    if !s.paths.state_dir.is_absolute() {
        return fail("paths.state_dir", "must be an absolute path");
    }
    let owned_flags = [
        ("--releasever", "packages.release"),
        ("--security", "packages.security_only"),
        ("--exclude", "packages.exclude"),
        ("-x", "packages.exclude"),
    ];
    for (key, args) in [("packages.dnf.args", &s.packages.dnf.args), ("packages.yum.args", &s.packages.yum.args)] {
        for arg in args {
            if let Some((flag, setting)) =
                owned_flags.iter().find(|(flag, _)| arg == flag || arg.starts_with(&format!("{flag}=")))
            {
                return fail(
                    key,
                    &format!(
                        "`{arg}`: {flag} is set through {setting}, so that the plan, the install and the verification agree"
                    ),
                );
            }
        }
    }
    let globs = [
        ("packages.exclude", &s.packages.exclude),
        ("packages.reboot_packages", &s.packages.reboot_packages),
        ("packages.extra_reboot_packages", &s.packages.extra_reboot_packages),
        ("packages.runtime_packages", &s.packages.runtime_packages),
        ("packages.extra_runtime_packages", &s.packages.extra_runtime_packages),
        ("packages.agent_packages", &s.packages.agent_packages),
        ("packages.livepatch.packages", &s.packages.livepatch.packages),
        ("packages.livepatch.kernel_packages", &s.packages.livepatch.kernel_packages),
    ];
    for (key, patterns) in globs {
        if let Some(bad) = patterns.iter().find(|p| glob::Pattern::new(p).is_err() || p.trim().is_empty()) {
            return fail(key, &format!("\"{bad}\" is not a package name or glob such as \"docker*\""));
        }
    }
    if s.packages.kernel_reboot_within.is_some_and(|d| d.is_zero() || d > MOST_KERNEL_WAIT) {
        return fail(
            "packages.kernel_reboot_within",
            "must be longer than zero and at most 365 days (leave it unset to reboot for every kernel)",
        );
    }
    let c = &s.coordination;
    if c.max_unavailable.budget().is_none() {
        return fail("coordination.max_unavailable", "must be a count such as 2 or a percentage such as \"10%\"");
    }
    if c.min_healthy_percent > 100 {
        return fail("coordination.min_healthy_percent", "must be between 0 and 100");
    }
    if c.group.is_empty() || !c.group.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '-') {
        return fail("coordination.group", "must be letters, digits, '.' and '-' only");
    }
    for (key, value) in [
        ("coordination.lease_ttl", c.lease_ttl),
        ("coordination.poll", c.poll),
        ("coordination.wait_timeout", c.wait_timeout),
        ("coordination.snapshot_max_age", c.snapshot_max_age),
    ] {
        if value.is_zero() {
            return fail(key, "must be longer than zero");
        }
    }
    if c.backend == Backend::Fleetlock
        && let Err(why) = https_or_loopback(&c.fleetlock_url)
    {
        return fail("coordination.fleetlock_url", &format!("must be the FleetLock server's URL: {why}"));
    }
    // DescribeAlarms: "AlarmNames ... Array Members: Maximum number of 100 items."
    if c.alarms.len() > 100 {
        return fail("coordination.alarms", "names at most 100 alarms (what one DescribeAlarms call can ask)");
    }
    if let Some(bad) = c.alarms.iter().find(|a| a.trim().is_empty() || a.len() > 255) {
        return fail("coordination.alarms", &format!("\"{bad}\" is not an alarm name (1 to 255 characters)"));
    }
    if c.backend == Backend::Dynamodb && c.dynamodb_table.is_empty() {
        return fail("coordination.dynamodb_table", "must name the lease table when backend is \"dynamodb\"");
    }
    if let Err((key, why)) = crate::window::Schedule::from_settings(&s.schedule) {
        return fail(&key, &why);
    }
    for (key, value) in [
        ("schedule.check_interval", s.schedule.check_interval),
        ("hooks.timeout", s.hooks.timeout),
        ("report.webhook_timeout", s.report.webhook_timeout),
    ] {
        if value.is_zero() {
            return fail(key, "must be longer than zero");
        }
    }
    if !s.hooks.dir.is_absolute() {
        return fail("hooks.dir", "must be an absolute path");
    }
    let r = &s.report;
    if !r.metrics_listen.is_empty() && r.metrics_listen.parse::<std::net::SocketAddr>().is_err() {
        return fail("report.metrics_listen", "must be an address and port such as \"127.0.0.1:9733\"");
    }
    if !r.metrics_textfile.as_os_str().is_empty() && !r.metrics_textfile.is_absolute() {
        return fail("report.metrics_textfile", "must be an absolute path ending in .prom");
    }
    if !r.webhook_url.is_empty()
        && let Err(why) = https_or_loopback(&r.webhook_url)
    {
        return fail("report.webhook_url", &why);
    }
    Ok(())
}

/// Refuses a URL that is not https, unless it is http to this host's loopback: what leaves
/// the host (a host's id, a failure's reason, the webhook's token) is not sent in clear.
fn https_or_loopback(url: &str) -> std::result::Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err("must be https:// (http:// only to this host's loopback, such as 127.0.0.1)".into()),
        other => Err(format!("must be an https:// URL, not {other}://")),
    }
}
