//! Log output: readable step lines on a terminal, structured fields under systemd.

use std::fmt::{self, Write as _};
use std::os::fd::AsFd;
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Variable that overrides the log filter: comma-separated `level` or `target=level`
/// directives (tracing-subscriber's `Targets`, e.g. `warn,ecs_patchd=debug`).
const FILTER_VARIABLE: &str = "ECS_PATCHD_LOG";

/// Sets up logging to stderr, or to the journal when stderr is connected to it.
/// `verbose` shows each step (for `run`); otherwise only warnings and errors.
pub fn init(verbose: bool) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let default = if verbose { "warn,ecs_patchd=info" } else { "warn" };
    let chosen = std::env::var(FILTER_VARIABLE).ok();
    let filter: Targets = match chosen.as_deref().map(str::parse) {
        Some(Ok(filter)) => filter,
        Some(Err(e)) => {
            eprintln!("ecs-patchd: {FILTER_VARIABLE}: {e}; logging with the default filter ({default})");
            default.parse()?
        }
        None => default.parse()?,
    };
    let registry = tracing_subscriber::registry().with(filter);
    if stderr_is_journal() {
        // Fields under their own names (STEP=, CYCLE=, ...), as `journalctl CYCLE=...` expects,
        // not tracing-journald's default F_ prefix.
        let journald = tracing_journald::layer()?.with_syslog_identifier("ecs-patchd".into()).with_field_prefix(None);
        registry.with(journald).try_init()?;
    } else {
        let terminal = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .event_format(StepLines { start: Instant::now() });
        registry.with(terminal).try_init()?;
    }
    Ok(())
}

/// systemd sets `JOURNAL_STREAM=dev:inode` for a service whose stderr is the journal.
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    value == format!("{}:{}", stat.st_dev, stat.st_ino)
}

/// `[   12.3s] message (key=value, ...)`: time since start, then what happened.
struct StepLines {
    start: Instant,
}

/// Fields that repeat the message or the context on a terminal.
const QUIET_FIELDS: [&str; 3] = ["step", "previous", "took"];

impl<S, N> FormatEvent<S, N> for StepLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        write!(writer, "[{:>8.1}s] ", self.start.elapsed().as_secs_f64())?;
        let level = *event.metadata().level();
        if level != Level::INFO {
            write!(writer, "{level}: ")?;
        }
        write!(writer, "{}", fields.message)?;
        if let (Some(previous), Some(took)) = (&fields.previous, &fields.took) {
            write!(writer, " ({previous} took {took})")?;
        }
        if !fields.rest.is_empty() {
            write!(writer, " ({})", fields.rest)?;
        }
        writeln!(writer)
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    previous: Option<String>,
    took: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "previous" => self.previous = Some(format!("{value:?}")),
            "took" => self.took = Some(format!("{value:?}")),
            _ => {}
        }
        if field.name() != "message" && !QUIET_FIELDS.contains(&field.name()) {
            let separator = if self.rest.is_empty() { "" } else { ", " };
            let _ = write!(self.rest, "{separator}{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
}
