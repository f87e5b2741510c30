//! apt's history log (`/var/log/apt/history.log`): which runtime packages an unattended
//! updater replaced under running tasks.
//!
//! Each transaction is a block of `Field: value` lines: "Start-Date: START_DATE /
//! Commandline: COMMAND / Upgrade: PACKAGE:amd64 (UPGRADE_OLD_VERSION,
//! UPGRADE_NEW_VERSION), ...", and unattended-upgrades' own transactions carry
//! "Commandline: /usr/bin/unattended-upgrade". The dates are the host's local time.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::SystemTime;

use crate::config::first_match;

/// The most of the log's end that is read: a day's transactions are a few KiB, and a log
/// that grew for years must not be read whole.
const TAIL_BYTES: u64 = 1 << 20;

/// One sentence for each package of `runtime_globs` that unattended-upgrades upgraded at or
/// after `since` (the boot), read from the history log at `path`; empty when there is none
/// or the log cannot be read.
pub fn runtime_updated_by_unattended(path: &Path, runtime_globs: &[String], since: SystemTime) -> Vec<String> {
    let Ok(text) = tail(path) else { return Vec::new() };
    let since = jiff::Timestamp::try_from(since).ok();
    let mut found = Vec::new();
    for block in text.split("\n\n") {
        let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
        if !field("Commandline:").is_some_and(|c| c.contains("unattended-upgrade")) {
            continue;
        }
        let Some(started) = field("Start-Date:") else { continue };
        let at = local_time(started);
        if let (Some(at), Some(since)) = (at, since)
            && at < since
        {
            continue;
        }
        for (name, old, new) in upgrades(field("Upgrade:").unwrap_or_default()) {
            if let Some(glob) = first_match(runtime_globs, name) {
                found.push(format!(
                    "unattended-upgrades replaced {name} {old} with {new} at {started} under running tasks \
                     (packages.runtime_packages \"{glob}\"); keep it out of unattended-upgrades \
                     (Unattended-Upgrade::Package-Blacklist) so that ecs-patchd updates it on a drained host"
                ));
            }
        }
    }
    found
}

/// When the host booted (now less `/proc/uptime`'s first figure); now when it cannot be read.
pub fn booted_at() -> std::time::SystemTime {
    let now = std::time::SystemTime::now();
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|s| s.parse::<f64>().ok()))
        .filter(|s| s.is_finite() && *s >= 0.0)
        .and_then(|s| now.checked_sub(std::time::Duration::from_secs_f64(s)))
        .unwrap_or(now)
}

/// The last [`TAIL_BYTES`] of the file, from the start of a line.
fn tail(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)))?;
    let mut bytes = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok(if length > TAIL_BYTES {
        text.split_once('\n').map_or(String::new(), |(_, rest)| rest.to_string())
    } else {
        text
    })
}

/// `2025-03-06  06:28:47` in the host's time zone.
fn local_time(text: &str) -> Option<jiff::Timestamp> {
    let civil: jiff::civil::DateTime = text.split_whitespace().collect::<Vec<_>>().join(" ").parse().ok()?;
    civil.to_zoned(jiff::tz::TimeZone::system()).ok().map(|z| z.timestamp())
}

/// `name:arch (old, new), ...` as (name, old, new).
fn upgrades(line: &str) -> Vec<(&str, &str, &str)> {
    line.split("), ")
        .filter_map(|entry| {
            let (package, versions) = entry.split_once(" (")?;
            let (old, new) = versions.trim_end_matches(')').split_once(", ")?;
            let name = package.split(':').next()?.trim();
            Some((name, old.trim(), new.trim()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_upgrades_by_unattended_upgrades_since_the_boot_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("history.log");
        std::fs::write(
            &log,
            "Start-Date: 2020-01-01  06:00:00\nCommandline: /usr/bin/unattended-upgrade\n\
             Upgrade: containerd:amd64 (1.6, 1.7)\nEnd-Date: 2020-01-01  06:00:09\n\n\
             Start-Date: 2099-01-01  06:00:00\nCommandline: apt-get upgrade\n\
             Upgrade: runc:amd64 (1.1, 1.2)\nEnd-Date: 2099-01-01  06:00:09\n\n\
             Start-Date: 2099-01-02  06:25:13\nCommandline: /usr/bin/unattended-upgrade\n\
             Upgrade: curl:amd64 (8.1, 8.2), containerd:amd64 (1.7.12-0ubuntu2, 1.7.12-0ubuntu4)\n\
             End-Date: 2099-01-02  06:25:20\n",
        )
        .unwrap();
        let globs = vec!["containerd".to_string(), "runc".to_string()];
        let since = SystemTime::now();
        let found = runtime_updated_by_unattended(&log, &globs, since);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("replaced containerd 1.7.12-0ubuntu2 with 1.7.12-0ubuntu4"), "{found:?}");
        assert!(runtime_updated_by_unattended(&dir.path().join("none"), &globs, since).is_empty());
    }
}
