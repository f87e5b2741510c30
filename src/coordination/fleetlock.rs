//! The FleetLock protocol (as served by airlock on etcd): `POST {base}/v1/pre-reboot` takes
//! a slot, `POST {base}/v1/steady-state` gives it back.
//!
//! FleetLock has no leases and no pause: a slot is held until released, so a host whose
//! cycle fails keeps its slot and the semaphore halts the roll once full (`fleet release`
//! frees it). The capacity guard is applied locally before asking, as with `none`.

use std::time::Duration;

use serde::Deserialize;

use super::{Coordinator, Decision, Grant, Halt, Local, SlotRequest};
use crate::ecs::Ecs;
use crate::error::{Error, Result};
use crate::foreign;

/// A FleetLock client for one group.
pub struct FleetLock {
    base: String,
    /// `base` with any credentials in it masked, for messages.
    shown: String,
    group: String,
    http: reqwest::Client,
    local: Local,
}

/// The largest answer read from a FleetLock server (its error body is a few dozen bytes).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// FleetLock's error body.
#[derive(Debug, Deserialize)]
struct Refusal {
    kind: String,
    value: String,
}

impl FleetLock {
    /// A client of the server at `base` for `group` (`^[a-zA-Z0-9.-]+$`).
    pub fn new(base: &str, group: &str, local: Local, timeout: Duration) -> Result<Self> {
        let http = crate::http::client_builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Lease(format!("cannot build the FleetLock client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            shown: crate::config::redact_url(base.trim_end_matches('/')),
            group: group.to_string(),
            http,
            local,
        })
    }

    /// Sends one protocol call; `Ok(None)` on 200, `Ok(Some(refusal))` on a protocol error.
    async fn call(&self, path: &str, id: &str) -> Result<Option<Refusal>> {
        let url = format!("{}/v1/{path}", self.base);
        let body = serde_json::json!({ "client_params": { "id": id, "group": self.group } });
        let response = self
            .http
            .post(&url)
            .header("fleet-lock-protocol", "true")
            .json(&body)
            .send()
            .await
            .map_err(|e| Error::Lease(format!("FleetLock {}/v1/{path}: {}", self.shown, e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            return Ok(None);
        }
        let body = crate::http::body_bounded(response, MAX_BODY_BYTES)
            .await
            .map_err(|why| Error::Lease(format!("FleetLock {}/v1/{path} {why}", self.shown)))?;
        refusal(&body).map(Some).ok_or_else(|| {
            Error::Lease(format!(
                "FleetLock {}/v1/{path} answered {status}: {}",
                self.shown,
                foreign::shown(String::from_utf8_lossy(&body).trim())
            ))
        })
    }
}

/// A FleetLock server's error body, its words bounded; `None` when it is not one.
fn refusal(body: &[u8]) -> Option<Refusal> {
    let refusal: Refusal = serde_json::from_slice(body).ok()?;
    Some(Refusal { kind: foreign::shown(&refusal.kind), value: foreign::shown(&refusal.value) })
}

#[async_trait::async_trait]
impl Coordinator for FleetLock {
    async fn acquire(&self, request: &SlotRequest, ecs: &dyn Ecs) -> Result<Decision> {
        // The host's services are checked before it takes the semaphore, not while holding it.
        if request.stays.is_none() {
            return Ok(Decision::Check);
        }
        // The semaphore first, so that only hosts holding it look at the cluster.
        match self.call("pre-reboot", &request.id).await? {
            None => {}
            Some(r) if r.kind == "failed_lock" => {
                return Ok(Decision::Wait { reason: format!("FleetLock: {}", r.value), pace: 1.0 });
            }
            Some(r) => return Err(Error::Lease(format!("FleetLock refused the slot: {}: {}", r.kind, r.value))),
        }
        match self.local.acquire(request, ecs).await? {
            Decision::Granted(_) => Ok(Decision::Granted(Grant::unfenced(&self.group))),
            other => {
                self.call("steady-state", &request.id).await?;
                Ok(other)
            }
        }
    }

    async fn renew(&self, _: &Grant, _: &str, _: &str, _: Duration) -> Result<bool> {
        Ok(true)
    }

    async fn withdraw(&self, _: &SlotRequest) -> Result<()> {
        Ok(())
    }

    /// The server keys its semaphore by host, not by cycle, and cannot be asked who holds
    /// it: the grant is taken as held, and releasing one that is not is harmless.
    async fn held(&self, _: &str, _: &str) -> Result<Option<Grant>> {
        Ok(Some(Grant::unfenced(&self.group)))
    }

    async fn release(&self, _: &Grant, id: &str) -> Result<()> {
        match self.call("steady-state", id).await? {
            None => Ok(()),
            Some(r) => Err(Error::Lease(format!("FleetLock refused the release: {}: {}", r.kind, r.value))),
        }
    }

    async fn pause(&self, reason: &str, by: &str) -> Result<Halt> {
        tracing::warn!(by, "FleetLock has no pause: the failed host keeps its slot so the roll halts ({reason})");
        Ok(Halt::KeepSlot)
    }

    async fn paused(&self) -> Result<Option<String>> {
        Ok(None)
    }

    fn ttl(&self) -> Duration {
        Duration::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn any_body_is_a_bounded_refusal_or_none(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Some(r) = refusal(&bytes) {
                prop_assert!(r.kind.chars().count() <= foreign::SHOWN_CHARS);
                prop_assert!(r.value.chars().count() <= foreign::SHOWN_CHARS);
            }
        }

        #[test]
        fn a_refusal_with_any_words_is_read_bounded_and_escaped(kind in ".{0,300}", value in ".{0,300}") {
            let body = serde_json::json!({"kind": kind, "value": value}).to_string();
            let r = refusal(body.as_bytes()).expect("a refusal");
            prop_assert!(r.value.chars().count() <= foreign::SHOWN_CHARS);
            prop_assert!(!r.kind.chars().chain(r.value.chars()).any(char::is_control));
        }
    }

    #[test]
    fn airlock_s_refusal_is_read_and_a_long_one_bounded() {
        let r = refusal(br#"{"kind":"failed_lock","value":"semaphore is full"}"#).unwrap();
        assert_eq!((r.kind.as_str(), r.value.as_str()), ("failed_lock", "semaphore is full"));
        let long = format!(r#"{{"kind":"x","value":"{}\n"}}"#, "y".repeat(10_000));
        assert_eq!(refusal(long.as_bytes()).unwrap().value.chars().count(), foreign::SHOWN_CHARS);
        assert!(refusal(b"<html>").is_none());
    }
}
