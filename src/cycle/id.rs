//! The cycle id, `<EC2 instance id>-<UTC start time>` (`i-0abc…-20261206T081500Z`): unique,
//! readable, and the value of the drain mark, so that a mark says which host drained the
//! instance and when ([`super::take_up`] reads it back).

use std::time::SystemTime;

/// The start time's format, in UTC.
const STAMP: &str = "%Y%m%dT%H%M%SZ";

/// The id of a cycle of EC2 instance `instance_id` that starts at `now`.
pub fn new(now: SystemTime, instance_id: &str) -> String {
    let stamp = jiff::Timestamp::try_from(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH).strftime(STAMP);
    format!("{instance_id}-{stamp}")
}

/// When cycle `id` began, read from its stamp; `None` when it has none.
pub fn began(id: &str) -> Option<SystemTime> {
    let (_, stamp) = id.rsplit_once('-')?;
    let civil = jiff::civil::DateTime::strptime(STAMP, stamp).ok()?;
    civil.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| SystemTime::from(z.timestamp()))
}

/// Whether `id` is the id of a cycle of EC2 instance `instance_id`.
pub fn is_of(id: &str, instance_id: &str) -> bool {
    let stamp = id.strip_prefix(instance_id).and_then(|rest| rest.strip_prefix('-'));
    !instance_id.is_empty() && stamp.is_some_and(|stamp| !stamp.contains('-')) && began(id).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_names_its_instance_and_gives_back_its_start_to_the_second() {
        let now = humantime::parse_rfc3339("2026-12-06T08:15:00Z").unwrap();
        let id = new(now, "i-0abc");
        assert_eq!(id, "i-0abc-20261206T081500Z");
        assert_eq!(began(&id), Some(now));
        assert!(is_of(&id, "i-0abc"));
        assert!(!is_of(&id, "i-0ab") && !is_of(&id, "i-0abcd") && !is_of(&id, ""));
        assert_eq!(began("i-0abc-garbage"), None);
        assert!(!is_of("i-0abc-", "i-0abc"));
    }
}
