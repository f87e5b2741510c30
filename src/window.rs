//! Maintenance windows: weekly slots (days, start, length) in an IANA time zone.
//!
//! A window opens on each of its days at its local start time and stays open for its
//! length, measured in elapsed time; it may run past midnight and past the week's end.
//! Windows that overlap or touch count as one. With no window at all, patching is always
//! allowed.
//!
//! Daylight saving time (jiff's "compatible" rule, as RFC 5545 and `java.time` do): a start
//! time that does not exist that day (the clock jumps from 02:00 to 03:00) moves forward by
//! the jump (02:30 opens at 03:30); a start time that happens twice (the clock goes back
//! from 03:00 to 02:00) is the first of the two. The length is elapsed time, so a 4-hour
//! window over a jump closes 4 real hours after it opened (at 07:00 wall-clock time for a
//! 02:00 start in spring, 05:00 in autumn).

use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

/// When the daemon checks for updates, and when patching may start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleSettings {
    /// How often the daemon checks for updates (each wait jittered by up to a tenth).
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// IANA time zone of the windows' days and start times.
    pub time_zone: String,
    /// Weekly maintenance windows; with none, patching may start at any time.
    pub windows: Vec<WindowSettings>,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self { check_interval: Duration::from_secs(4 * 3600), time_zone: "UTC".into(), windows: Vec::new() }
    }
}

/// One weekly maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSettings {
    /// Days it opens: "mon" .. "sun", or ranges such as "mon-fri" (may wrap: "fri-mon").
    pub days: Vec<String>,
    /// Local start time, "HH:MM".
    pub start: String,
    /// How long it stays open (elapsed time, at most a week).
    #[serde(with = "humantime_serde")]
    pub length: Duration,
}

/// The longest window: a window of a whole week is always open.
pub const MAX_LENGTH: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether patching may start at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Openness {
    /// No window is configured (or the windows cover every hour, back to back): always open.
    Always,
    /// Open until then.
    OpenUntil(SystemTime),
    /// Closed until then.
    ClosedUntil(SystemTime),
}

impl Openness {
    /// True when patching may start now.
    pub fn is_open(self) -> bool {
        !matches!(self, Openness::ClosedUntil(_))
    }

    /// When a drain may start no longer (`None`: never ends).
    pub fn closes_at(self) -> Option<SystemTime> {
        match self {
            Openness::OpenUntil(t) => Some(t),
            _ => None,
        }
    }
}

/// One weekly window, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    days: [bool; 7],
    hour: i8,
    minute: i8,
    length: Duration,
}

/// The configured windows in their time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    zone: TimeZone,
    windows: Vec<Window>,
}

impl Schedule {
    /// Parses the schedule; an error names the key (under `schedule.`) and what is allowed.
    pub fn from_settings(settings: &ScheduleSettings) -> Result<Self, (String, String)> {
        let zone = TimeZone::get(&settings.time_zone).map_err(|e| {
            (
                "schedule.time_zone".to_string(),
                format!(
                    "\"{}\" is not an IANA time zone such as \"Europe/Berlin\" or \"UTC\": {e}",
                    settings.time_zone
                ),
            )
        })?;
        let windows = settings
            .windows
            .iter()
            .enumerate()
            .map(|(i, w)| parse_window(w).map_err(|(key, why)| (format!("schedule.windows[{i}].{key}"), why)))
            .collect::<Result<_, _>>()?;
        Ok(Self { zone, windows })
    }

    /// Whether patching may start at `at`, and until when that stays so.
    pub fn at(&self, at: SystemTime) -> Openness {
        if self.windows.is_empty() {
            return Openness::Always;
        }
        let Ok(now) = Timestamp::try_from(at) else {
            return Openness::Always; // outside jiff's range (years -9999..=9999): no real clock
        };
        let today = now.to_zoned(self.zone.clone()).date();
        // Windows that touch end to end may run on for weeks: look further ahead until the
        // window open now is seen to close. Open for more than a year on end is always open.
        for days_ahead in [8, 64, 400] {
            let merged = self.merged_around(today, days_ahead);
            let last = merged.len() - 1;
            for (i, (start, end)) in merged.into_iter().enumerate() {
                if end > at {
                    if start > at {
                        return Openness::ClosedUntil(start);
                    }
                    if i < last {
                        return Openness::OpenUntil(end);
                    }
                    break;
                }
            }
        }
        Openness::Always
    }

    /// Every window occurrence from 8 days before `day` (a window lasts at most a week) to
    /// `days_ahead` after it, as elapsed-time intervals, sorted, overlapping ones merged.
    /// There is at least one: every window opens once a week.
    fn merged_around(&self, day: Date, days_ahead: i64) -> Vec<(SystemTime, SystemTime)> {
        let mut intervals = Vec::new();
        for offset in -8i64..=days_ahead {
            let Ok(date) = day.checked_add(jiff::Span::new().days(offset)) else { continue };
            let weekday = date.weekday().to_monday_zero_offset() as usize;
            for w in self.windows.iter().filter(|w| w.days[weekday]) {
                // `to_zoned` resolves gaps and folds by the "compatible" rule (module docs).
                let Ok(start) = date.at(w.hour, w.minute, 0, 0).to_zoned(self.zone.clone()) else { continue };
                let start = SystemTime::from(start.timestamp());
                intervals.push((start, start + w.length));
            }
        }
        intervals.sort();
        let mut merged: Vec<(SystemTime, SystemTime)> = Vec::new();
        for (start, end) in intervals {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }

    /// `at` written in the schedule's time zone, for people.
    pub fn local(&self, at: SystemTime) -> String {
        Timestamp::try_from(at)
            .map(|t| t.to_zoned(self.zone.clone()).strftime("%a %Y-%m-%d %H:%M %Z").to_string())
            .unwrap_or_else(|_| humantime::format_rfc3339_seconds(at).to_string())
    }
}

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

fn parse_window(w: &WindowSettings) -> Result<Window, (String, String)> {
    let mut days = [false; 7];
    if w.days.is_empty() {
        return Err(("days".into(), "must name at least one day".into()));
    }
    for entry in &w.days {
        let (first, last) = entry.split_once('-').unwrap_or((entry, entry));
        let (Some(first), Some(last)) = (day_index(first), day_index(last)) else {
            return Err((
                "days".into(),
                format!("\"{entry}\" is not a day (mon, tue, wed, thu, fri, sat, sun) or a range such as \"mon-fri\""),
            ));
        };
        // A range may wrap the week's end: "fri-mon" is Friday to Monday.
        let mut day = first;
        loop {
            days[day] = true;
            if day == last {
                break;
            }
            day = (day + 1) % 7;
        }
    }
    let bad_start = || ("start".to_string(), format!("\"{}\" is not a time of day such as \"02:00\"", w.start));
    let (h, m) = w.start.split_once(':').ok_or_else(bad_start)?;
    let (hour, minute) = (h.parse::<i8>().map_err(|_| bad_start())?, m.parse::<i8>().map_err(|_| bad_start())?);
    if !(0..24).contains(&hour) || !(0..60).contains(&minute) || m.len() != 2 {
        return Err(bad_start());
    }
    if w.length.is_zero() || w.length > MAX_LENGTH {
        return Err(("length".into(), "must be longer than zero and at most a week (\"168h\")".into()));
    }
    Ok(Window { days, hour, minute, length: w.length })
}

fn day_index(name: &str) -> Option<usize> {
    let name = name.trim().to_ascii_lowercase();
    DAYS.iter().position(|(short, day)| {
        name == *short || name == format!("{day:?}").to_ascii_lowercase() // "monday"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(zone: &str, windows: &[(&[&str], &str, u64)]) -> Schedule {
        let settings = ScheduleSettings {
            time_zone: zone.into(),
            windows: windows
                .iter()
                .map(|(days, start, minutes)| WindowSettings {
                    days: days.iter().map(|d| d.to_string()).collect(),
                    start: start.to_string(),
                    length: Duration::from_secs(minutes * 60),
                })
                .collect(),
            ..ScheduleSettings::default()
        };
        Schedule::from_settings(&settings).unwrap()
    }

    fn at(text: &str) -> SystemTime {
        SystemTime::from(text.parse::<Timestamp>().unwrap())
    }

    #[test]
    fn a_window_wraps_midnight_and_the_weeks_end() {
        // Sunday 22:00 UTC for 4 hours: open until Monday 02:00.
        let s = schedule("UTC", &[(&["sun"], "22:00", 240)]);
        assert_eq!(s.at(at("2026-11-29T23:30:00Z")), Openness::OpenUntil(at("2026-11-30T02:00:00Z")));
        assert_eq!(s.at(at("2026-11-30T01:59:00Z")), Openness::OpenUntil(at("2026-11-30T02:00:00Z")));
        assert_eq!(s.at(at("2026-11-30T02:00:00Z")), Openness::ClosedUntil(at("2026-12-06T22:00:00Z")));
    }

    #[test]
    fn overlapping_windows_are_one() {
        let s = schedule("UTC", &[(&["mon-fri"], "01:00", 120), (&["tue"], "02:30", 60)]);
        // Tuesday: 01:00-03:00 and 02:30-03:30 merge into 01:00-03:30.
        assert_eq!(s.at(at("2026-12-01T01:10:00Z")), Openness::OpenUntil(at("2026-12-01T03:30:00Z")));
        // Saturday: closed until Monday 01:00.
        assert_eq!(s.at(at("2026-12-05T12:00:00Z")), Openness::ClosedUntil(at("2026-12-07T01:00:00Z")));
    }

    #[test]
    fn daylight_saving_gap_and_fold() {
        // Europe/Berlin: 2026-03-29 02:00 CET jumps to 03:00 CEST; 2026-10-25 03:00 CEST goes
        // back to 02:00 CET.
        let s = schedule("Europe/Berlin", &[(&["sun"], "02:30", 60)]);
        // The gap: 02:30 does not exist and becomes 03:30 CEST (01:30 UTC).
        assert_eq!(s.at(at("2026-03-29T01:00:00Z")), Openness::ClosedUntil(at("2026-03-29T01:30:00Z")));
        // The fold: 02:30 happens twice; the first (CEST, 00:30 UTC) counts.
        assert_eq!(s.at(at("2026-10-25T00:00:00Z")), Openness::ClosedUntil(at("2026-10-25T00:30:00Z")));
        // The length is elapsed time: a 4-hour window from 01:00 over the spring jump
        // closes at 06:00 CEST (04:00 UTC), four real hours later.
        let s = schedule("Europe/Berlin", &[(&["sun"], "01:00", 240)]);
        assert_eq!(s.at(at("2026-03-29T00:30:00Z")), Openness::OpenUntil(at("2026-03-29T04:00:00Z")));
    }

    #[test]
    fn bad_windows_name_the_key() {
        let bad = |days: &[&str], start: &str, length: u64| {
            let settings = ScheduleSettings {
                windows: vec![WindowSettings {
                    days: days.iter().map(|d| d.to_string()).collect(),
                    start: start.into(),
                    length: Duration::from_secs(length),
                }],
                ..ScheduleSettings::default()
            };
            Schedule::from_settings(&settings).unwrap_err().0
        };
        assert_eq!(bad(&["someday"], "02:00", 60), "schedule.windows[0].days");
        assert_eq!(bad(&[], "02:00", 60), "schedule.windows[0].days");
        assert_eq!(bad(&["mon"], "25:00", 60), "schedule.windows[0].start");
        assert_eq!(bad(&["mon"], "2", 60), "schedule.windows[0].start");
        assert_eq!(bad(&["mon"], "02:00", 0), "schedule.windows[0].length");
        let zone = ScheduleSettings { time_zone: "Mars/Olympus".into(), ..ScheduleSettings::default() };
        assert_eq!(Schedule::from_settings(&zone).unwrap_err().0, "schedule.time_zone");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const ZONES: [&str; 5] = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"];

        fn windows() -> impl Strategy<Value = Vec<WindowSettings>> {
            let window =
                (1u8..128, 0i8..24, 0i8..60, 1u64..(7 * 24 * 60)).prop_map(|(days, h, m, minutes)| WindowSettings {
                    days: (0..7).filter(|d| days & (1 << d) != 0).map(|d| DAYS[d].0.to_string()).collect(),
                    start: format!("{h:02}:{m:02}"),
                    length: Duration::from_secs(minutes * 60),
                });
            proptest::collection::vec(window, 1..4)
        }

        /// An answer found another way, for UTC (no clock changes): does an occurrence of one
        /// of `windows`, starting on `t`'s day or one of the 8 before, cover `t`?
        fn open_in_utc(windows: &[WindowSettings], t: u64) -> bool {
            const DAY: u64 = 86_400;
            windows.iter().any(|w| {
                let (h, m) = w.start.split_once(':').unwrap();
                let at = h.parse::<u64>().unwrap() * 3600 + m.parse::<u64>().unwrap() * 60;
                (0..=8).any(|back| {
                    let date = t / DAY - back;
                    let weekday = DAYS[((date + 3) % 7) as usize].0; // 1970-01-01 was a Thursday
                    let start = date * DAY + at;
                    w.days.iter().any(|d| d == weekday) && start <= t && t < start + w.length.as_secs()
                })
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]

            /// Open means a window covers `t` up to the announced close, and closed means no
            /// window opens before the announced opening; both hold across DST changes.
            #[test]
            fn the_answer_agrees_with_the_times_around_it(
                zone in 0usize..ZONES.len(),
                windows in windows(),
                // 2025-01-01 .. 2028-01-01, where every zone above changes its clocks
                secs in 1_735_689_600u64..1_830_297_600,
                fraction in 0.0f64..1.0,
            ) {
                let s = Schedule::from_settings(&ScheduleSettings {
                    time_zone: ZONES[zone].into(),
                    windows: windows.clone(),
                    ..ScheduleSettings::default()
                }).unwrap();
                let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                if ZONES[zone] == "UTC" {
                    prop_assert_eq!(s.at(t).is_open(), open_in_utc(&windows, secs));
                }
                let second = Duration::from_secs(1);
                match s.at(t) {
                    Openness::Always => {
                        // Only windows that cover every hour of the week, back to back.
                        let later = t + Duration::from_secs(400 * 24 * 3600).mul_f64(fraction);
                        prop_assert!(s.at(later).is_open());
                    }
                    Openness::OpenUntil(end) => {
                        prop_assert!(end > t);
                        let inside = t + end.duration_since(t).unwrap().mul_f64(fraction);
                        prop_assert_eq!(s.at(inside), Openness::OpenUntil(end));
                        prop_assert!(!s.at(end).is_open(), "closed at the announced close");
                    }
                    Openness::ClosedUntil(start) => {
                        prop_assert!(start > t);
                        prop_assert!(start.duration_since(t).unwrap() <= Duration::from_secs(8 * 24 * 3600));
                        let inside = t + start.duration_since(t).unwrap().mul_f64(fraction);
                        prop_assert_eq!(s.at(inside), Openness::ClosedUntil(start));
                        prop_assert!(s.at(start).is_open(), "open at the announced opening");
                        prop_assert!(!s.at(start - second).is_open());
                    }
                }
            }
        }
    }
}
