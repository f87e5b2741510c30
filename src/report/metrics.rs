//! Prometheus metrics, drawn from the report record and the cycle in progress: written to a
//! node_exporter textfile by every command, and served by the daemon on a local address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::warn;

use super::record::Record;
use crate::atomic_file;
use crate::cycle::Cycle;
use crate::journal;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

fn seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// The metrics in the OpenMetrics text format (which Prometheus and node_exporter read).
pub fn render(record: &Record, cycle: Option<&Cycle>) -> String {
    let mut registry = Registry::with_prefix("ecs_patchd");
    let in_progress = cycle.filter(|c| !c.state.is_done());

    let step = Family::<StepLabel, Gauge>::default();
    let name = in_progress.map_or("idle", |c| c.state.name());
    step.get_or_create(&StepLabel { step: name.into() }).set(1);
    registry.register("step", "The cycle's current step (idle when no cycle runs)", step);

    let gauge = |value: i64| {
        let g = Gauge::<i64>::default();
        g.set(value);
        g
    };
    let float = |value: f64| {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(value);
        g
    };
    // A kernel that waits for its reboot is pending all the same (counted as a security fix:
    // it waits only for the CVEs it fixes).
    let waiting = record.livepatch.as_ref().and_then(|l| l.deferred.as_ref()).map_or(0, |d| d.packages.len()) as i64;
    registry.register(
        "updates_pending",
        "Updates pending at the last check (a kernel that waits for its reboot included)",
        gauge(record.pending.len() as i64 + waiting),
    );
    let security = record.pending.iter().filter(|u| u.security).count() as i64 + waiting;
    registry.register("security_updates_pending", "Security updates pending at the last check", gauge(security));
    registry.register(
        "reboot_needed",
        "1 when installing the pending updates needs a reboot, or a reboot is due already",
        gauge(i64::from(record.reboot_needed)),
    );
    registry.register(
        "reboot_due",
        "1 when a reboot is due with no update pending (a kernel or library installed, not yet running)",
        gauge(i64::from(record.reboot_due.is_some())),
    );
    registry.register(
        "release_pending",
        "1 when a newer Amazon Linux release is published and not applied (packages.release)",
        gauge(i64::from(record.release_available.is_some())),
    );
    registry.register(
        "setup_error",
        "1 when a mistake in the setup (a missing table, cluster or permission) stopped the last check or attempt",
        gauge(i64::from(record.setup_error.is_some())),
    );
    registry.register(
        "roll_paused",
        "1 when this host's last attempt found its group's roll paused (an operator resumes it)",
        gauge(i64::from(record.roll_paused.is_some())),
    );
    if let Some(live) = &record.livepatch {
        registry.register(
            "livepatches_loaded",
            "Kernel live patches loaded into the running kernel, at the last check",
            gauge(live.loaded.len() as i64),
        );
        registry.register(
            "livepatch_cves_covered",
            "CVEs the kernel live patches fix, loaded or installed by the cycle, at the last check",
            gauge(live.cves.len() as i64),
        );
        registry.register(
            "kernel_deferred",
            "1 while a pending kernel waits for its reboot because live patches cover its fixes",
            gauge(i64::from(live.deferred.is_some())),
        );
        if let Some(deferred) = &live.deferred {
            registry.register(
                "kernel_reboot_deadline_timestamp_seconds",
                "When the deferred kernel's wait ends (packages.kernel_reboot_within): the next window drains and reboots",
                float(seconds(deferred.deadline)),
            );
        }
    }
    let lease = in_progress.is_some_and(|c| c.state.lease().is_some());
    registry.register("lease_held", "1 while this host holds a slot of the fleet's roll", gauge(i64::from(lease)));
    if let Some(at) = record.checked_at {
        registry.register("last_check_timestamp_seconds", "When updates were last looked for", float(seconds(at)));
    }
    if let Some(at) = record.last_success {
        registry.register(
            "last_success_timestamp_seconds",
            "When a cycle last ended well (patched or nothing to do)",
            float(seconds(at)),
        );
    }
    let failures = Family::<KindLabel, Counter>::default();
    for (kind, count) in &record.failures {
        failures.get_or_create(&KindLabel { kind: kind.clone() }).inc_by(*count);
    }
    registry.register("failures", "Failed cycles by error kind", failures);
    if let Some(last) = &record.last_cycle {
        if let Some(s) = last.drain_seconds {
            registry.register("drain_seconds", "How long the last drain took", float(s));
        }
        if let Some(s) = last.out_of_service_seconds {
            registry.register(
                "out_of_service_seconds",
                "How long the last cycle kept the host out of service",
                float(s),
            );
        }
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

/// Rewrites the node_exporter textfile at `path` atomically; a failure is logged.
pub fn write_textfile(path: &Path, record: &Record, cycle: Option<&Cycle>) {
    if let Err(e) = atomic_file::replace(path, render(record, cycle).as_bytes(), 0o644) {
        warn!("cannot write the metrics textfile {}: {e}", path.display());
    }
}

/// The most scrape connections served at once. A scraper needs one; the others wait in the
/// kernel's listen backlog, not among this process's file descriptors, which the cycle's own
/// calls to ECS and IMDS need (systemd's default limit is 1,024 for the whole process).
const MAX_CONNECTIONS: usize = 16;

/// How long a client has to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one connection may stay open, however busy.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// The first and the longest pause after `accept` fails (out of file descriptors, say),
/// rather than trying again at once, in a loop.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// Serves `/metrics` on `address` until the process ends, reading the record and the
/// journal of `state_dir` at each request (so it costs nothing between scrapes). However
/// many clients connect, and however slowly they talk, it holds at most
/// [`MAX_CONNECTIONS`] sockets, each for at most [`CONNECTION_LIFETIME`].
pub async fn serve(address: SocketAddr, state_dir: PathBuf) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "serving Prometheus metrics on /metrics");
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::ZERO;
    loop {
        let permit = Arc::clone(&permits).acquire_owned().await.expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(e) => {
                if backoff.is_zero() {
                    warn!(
                        "metrics: cannot accept a connection ({e}); trying again with pauses up to {:?}",
                        ACCEPT_BACKOFF.1
                    );
                }
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF.0, ACCEPT_BACKOFF.1);
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let dir = state_dir.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| answer(request, dir.clone()));
            let io = hyper_util::rt::TokioIo::new(stream);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(io, service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Err(e)) => tracing::debug!("metrics connection: {e}"),
                Err(_) => tracing::debug!("metrics connection closed after {CONNECTION_LIFETIME:?}"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// The answer to one request: the metrics on `/metrics`, 404 elsewhere.
async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    dir: PathBuf,
) -> Result<hyper::Response<http_body_util::Full<hyper::body::Bytes>>, std::convert::Infallible> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Response, StatusCode};
    let response = if request.uri().path() == "/metrics" {
        let cycle = journal::read::<Cycle>(&dir).ok().flatten();
        Response::builder()
            .header("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(Full::new(Bytes::from(render(&Record::load(&dir), cycle.as_ref()))))
    } else {
        Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::from("see /metrics\n")))
    };
    Ok(response.expect("a valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::PackageUpdate;

    #[test]
    fn the_record_becomes_metrics() {
        let mut record = Record::default();
        let update = |name: &str, security| PackageUpdate {
            name: name.into(),
            current: Some("1".into()),
            available: "2".into(),
            built: None,
            security,
            severity: None,
        };
        record.checked_at = Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100));
        record.pending = vec![update("a", true), update("b", false)];
        record.reboot_needed = true;
        record.release_available = Some("2023.2".into());
        record.failures.insert("packages".into(), 2);
        let text = render(&record, None);
        for line in [
            "ecs_patchd_step{step=\"idle\"} 1",
            "ecs_patchd_updates_pending 2",
            "ecs_patchd_security_updates_pending 1",
            "ecs_patchd_reboot_needed 1",
            "ecs_patchd_reboot_due 0",
            "ecs_patchd_release_pending 1",
            "ecs_patchd_lease_held 0",
            "ecs_patchd_last_check_timestamp_seconds 100.0",
            "ecs_patchd_failures_total{kind=\"packages\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("last_success"), "no success yet:\n{text}");
    }
}
