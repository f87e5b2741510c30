//! Notifications to a Slack-compatible webhook (an incoming webhook takes `{"text": ...}`;
//! the other fields are for programs reading the same payload).

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tracing::warn;

use crate::cycle::Cycle;
use crate::foreign;

/// The most characters of a reason posted: it may quote a package manager or a peer, and
/// it leaves the host.
const MAX_REASON: usize = 2000;

/// What is posted for one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payload {
    /// One line for people (Slack shows it).
    pub text: String,
    /// The event, kebab-case (`drain-started`, `rebooting`, `back-in-service`, `failed`, `paused`).
    pub event: String,
    /// The ECS cluster.
    pub cluster: String,
    /// The EC2 instance id.
    pub instance_id: String,
    /// The cycle id.
    pub cycle: String,
    /// Why, or what happened.
    pub reason: String,
}

impl Payload {
    /// The payload for `event` of `cycle`.
    pub fn new(cycle: &Cycle, event: super::Event, detail: &str) -> Self {
        Self {
            text: format!(
                "ecs-patchd: {} on {} (cluster {}): {}",
                event.describe(),
                cycle.instance_id,
                cycle.cluster,
                foreign::bounded(detail, MAX_REASON)
            ),
            event: event.name().to_string(),
            cluster: cycle.cluster.clone(),
            instance_id: cycle.instance_id.clone(),
            cycle: cycle.id.clone(),
            reason: foreign::bounded(detail, MAX_REASON),
        }
    }
}

/// A [`super::Reporter`] that posts every event to a webhook, in the background.
pub struct Webhook {
    url: String,
    timeout: Duration,
    client: reqwest::Client,
    sending: Mutex<JoinSet<()>>,
}

impl Webhook {
    /// Posts to `url`, each post bounded by `timeout`. The URL is a secret (it carries the
    /// webhook's token): it never appears in a message.
    pub fn new(url: &str, timeout: Duration) -> crate::error::Result<Self> {
        let client = crate::http::client_builder().build().map_err(|e| {
            crate::error::Error::Host(format!("cannot set up the webhook's HTTP client: {}", e.without_url()))
        })?;
        Ok(Self { url: url.to_string(), timeout, client, sending: Mutex::new(JoinSet::new()) })
    }

    /// Waits for the posts still in flight (each bounded by the timeout), before the
    /// process exits.
    pub async fn flush(&self) {
        let mut sending = std::mem::take(&mut *self.sending.lock().expect("webhook lock"));
        while sending.join_next().await.is_some() {}
    }
}

impl super::Reporter for Webhook {
    fn event(&self, cycle: &Cycle, event: super::Event, detail: &str) {
        let payload = Payload::new(cycle, event, detail);
        let (client, url, timeout) = (self.client.clone(), self.url.clone(), self.timeout);
        let post = async move {
            let sent = client.post(&url).timeout(timeout).json(&payload).send().await;
            match sent.and_then(|r| r.error_for_status()) {
                Ok(_) => tracing::debug!(event = %payload.event, "webhook notified"),
                // Without the URL: it holds the webhook's token.
                Err(e) => warn!(event = %payload.event, "cannot notify the webhook: {}", e.without_url()),
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(_) => {
                self.sending.lock().expect("webhook lock").spawn(post);
            }
            Err(_) => warn!("cannot notify the webhook outside the async runtime"),
        }
    }
}
