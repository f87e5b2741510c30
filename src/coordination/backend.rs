//! The coordinator the configuration chooses (`coordination.backend`): none or report-only (local), a
//! lease in DynamoDB, or a FleetLock server; with the CloudWatch alarms it watches.

use std::sync::Arc;
use std::time::Duration;

use super::dynamodb::DynamoStore;
use super::fleetlock::FleetLock;
use super::store::watch::WatchFile;
use super::store::{StoreCoordinator, StoreSettings};
use super::{Coordinator, Local};
use crate::alarms::{Alarms, CloudWatchAlarms};
use crate::clock::Clock;
use crate::config::{Backend, CoordinationSettings};
use crate::ec2::{Ec2Instances, Instances};
use crate::error::Result;

/// The coordinator the settings ask for, for `cluster`; a lease store's keeps what it
/// watches in `watch`.
pub fn from_settings(
    settings: &CoordinationSettings,
    aws: &aws_config::SdkConfig,
    cluster: &str,
    clock: Arc<dyn Clock>,
    watch: Option<WatchFile>,
) -> Result<Arc<dyn Coordinator>> {
    let alarms = alarms(settings, aws);
    let ec2: Arc<dyn Instances> = Arc::new(Ec2Instances::new(aws));
    let local = || Local::new(settings.policy(), Arc::clone(&clock), alarms.clone()).with_ec2(Arc::clone(&ec2));
    Ok(match settings.backend {
        Backend::ReportOnly | Backend::None => Arc::new(local()),
        Backend::Dynamodb => Arc::new(
            store_coordinator(settings, aws, cluster, Arc::clone(&clock))
                .with_alarms(alarms)
                .with_ec2(ec2)
                .with_watch_file(watch),
        ),
        Backend::Fleetlock => {
            Arc::new(FleetLock::new(&settings.fleetlock_url, &settings.group, local(), Duration::from_secs(10))?)
        }
    })
}

/// The CloudWatch alarms the settings watch, if any.
fn alarms(settings: &CoordinationSettings, aws: &aws_config::SdkConfig) -> Option<Arc<dyn Alarms>> {
    (!settings.alarms.is_empty()).then(|| Arc::new(CloudWatchAlarms::new(aws, &settings.alarms)) as Arc<dyn Alarms>)
}

/// The DynamoDB-backed coordinator of `cluster` (also used by `fleet` commands).
pub fn store_coordinator(
    settings: &CoordinationSettings,
    aws: &aws_config::SdkConfig,
    cluster: &str,
    clock: Arc<dyn Clock>,
) -> StoreCoordinator {
    let table = Arc::new(DynamoStore::new(aws, &settings.dynamodb_table));
    StoreCoordinator::new(table, clock, store_settings(settings, cluster))
}

/// The [`StoreSettings`] the configuration describes.
pub fn store_settings(settings: &CoordinationSettings, cluster: &str) -> StoreSettings {
    StoreSettings {
        cluster: cluster.to_string(),
        group: settings.group.clone(),
        policy: settings.policy(),
        ttl: settings.lease_ttl,
        snapshot_max_age: settings.snapshot_max_age,
        on_stale: settings.on_stale_lease,
        poll: settings.poll,
    }
}
