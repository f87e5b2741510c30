//! The alarm gate: no new slot is granted while any of the configured CloudWatch alarms
//! is in ALARM (the ECS analogue of kured's gate on Prometheus alerts). A roll already under
//! way finishes what it started; only new drains wait.

use aws_sdk_cloudwatch::types::StateValue;

use crate::error::{Error, Result};

/// Which of the watched alarms are firing.
#[async_trait::async_trait]
pub trait Alarms: Send + Sync {
    /// The names of the watched alarms now in ALARM (empty: none).
    async fn firing(&self) -> Result<Vec<String>>;
}

/// The gate's answer, for a coordinator: `Some(reason)` while no slot may be granted. An
/// alarm that cannot be read keeps the gate shut (it may be the one firing).
pub async fn gate(alarms: Option<&dyn Alarms>) -> Option<String> {
    match alarms?.firing().await {
        Ok(firing) if firing.is_empty() => None,
        Ok(firing) => Some(format!("no new slot while CloudWatch alarm(s) {} are in ALARM", firing.join(", "))),
        Err(e) => Some(format!("no new slot while the CloudWatch alarms cannot be read: {e}")),
    }
}

/// [`Alarms`] read with CloudWatch's DescribeAlarms.
pub struct CloudWatchAlarms {
    client: aws_sdk_cloudwatch::Client,
    names: Vec<String>,
}

impl CloudWatchAlarms {
    /// Watches the alarms `names` (at most 100, as configuration checks), reached with `config`.
    pub fn new(config: &aws_config::SdkConfig, names: &[String]) -> Self {
        Self { client: aws_sdk_cloudwatch::Client::new(config), names: names.to_vec() }
    }
}

#[async_trait::async_trait]
impl Alarms for CloudWatchAlarms {
    async fn firing(&self) -> Result<Vec<String>> {
        // DescribeAlarms: "AlarmNames: The names of the alarms to retrieve information
        // about ... Maximum number of 100 items"; StateValue ALARM returns only those firing,
        // metric and composite alike (AlarmTypes, when given, must name both).
        let out = self
            .client
            .describe_alarms()
            .set_alarm_names(Some(self.names.clone()))
            .state_value(StateValue::Alarm)
            .alarm_types(aws_sdk_cloudwatch::types::AlarmType::MetricAlarm)
            .alarm_types(aws_sdk_cloudwatch::types::AlarmType::CompositeAlarm)
            .max_records(100)
            .send()
            .await
            .map_err(|e| {
                crate::aws::error("CloudWatch DescribeAlarms", &e, |failure| {
                    Error::Lease(format!("CloudWatch DescribeAlarms failed: {}", failure.reason))
                })
            })?;
        // Each state is checked again here: moto, for one, ignores StateValue when names
        // are given.
        let firing = |state: Option<&StateValue>| state == Some(&StateValue::Alarm);
        let metric = out.metric_alarms().iter().filter(|a| firing(a.state_value())).filter_map(|a| a.alarm_name());
        let composite =
            out.composite_alarms().iter().filter(|a| firing(a.state_value())).filter_map(|a| a.alarm_name());
        Ok(metric.chain(composite).map(str::to_string).collect())
    }
}
