//! Systems Manager compliance and inventory: after every check and cycle the host sends the
//! whole picture again (both APIs replace what was there).
//!
//! AWS (PutComplianceItems): "This call overwrites existing compliance information on the
//! resource, so you must provide a full list of compliance items each time that you send
//! the request"; UploadType "is only valid for association compliance" ("By default, all
//! requests use COMPLETE mode"), so it is not sent; severities are CRITICAL, HIGH, MEDIUM,
//! LOW, INFORMATIONAL and UNSPECIFIED. (PutInventory): custom type names start with "Custom:",
//! CaptureTime is "yyyy-MM-dd'T'HH:mm:ss'Z'", each value at most 4,096 characters.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_ssm::primitives::DateTime;
use aws_sdk_ssm::types::{
    ComplianceExecutionSummary, ComplianceItemEntry, ComplianceSeverity, ComplianceStatus, InventoryItem,
};

use super::record::Record;
use crate::cycle::Outcome;
use crate::error::{Error, Result};
use crate::packages::PackageUpdate;

/// The compliance type and the inventory type ecs-patchd reports under.
pub const TYPE_NAME: &str = "Custom:EcsPatchd";

/// Longest value PutInventory accepts.
const MAX_VALUE: usize = 4096;

/// Sends compliance and inventory for one managed instance.
pub struct SsmReport {
    client: aws_sdk_ssm::Client,
    instance_id: String,
}

impl SsmReport {
    /// Reports for `instance_id` through the SSM endpoint of `aws`.
    pub fn new(aws: &aws_config::SdkConfig, instance_id: &str) -> Self {
        Self { client: aws_sdk_ssm::Client::new(aws), instance_id: instance_id.to_string() }
    }

    /// Sends both; the caller logs a failure and goes on.
    pub async fn publish(&self, record: &Record) -> Result<()> {
        let failed = |what: &str, e: String| Error::Host(format!("SSM {what}: {e}"));
        let checked = record.checked_at.unwrap_or_else(SystemTime::now);
        let summary = ComplianceExecutionSummary::builder()
            .execution_time(DateTime::from(checked))
            .execution_type("ecs-patchd")
            .build()
            .map_err(|e| failed("compliance", e.to_string()))?;
        let items = compliance_items(record).map_err(|e| failed("compliance", e.to_string()))?;
        self.client
            .put_compliance_items()
            .resource_id(&self.instance_id)
            .resource_type("ManagedInstance")
            .compliance_type(TYPE_NAME)
            .execution_summary(summary)
            .set_items(Some(items))
            .send()
            .await
            .map_err(|e| sdk_error("PutComplianceItems", &e))?;
        let item = InventoryItem::builder()
            .type_name(TYPE_NAME)
            .schema_version("1.0")
            .capture_time(capture_time(SystemTime::now()))
            .content(inventory_content(record))
            .build()
            .map_err(|e| failed("inventory", e.to_string()))?;
        self.client
            .put_inventory()
            .instance_id(&self.instance_id)
            .items(item)
            .send()
            .await
            .map_err(|e| sdk_error("PutInventory", &e))?;
        Ok(())
    }
}

/// An SSM call's failure, read as every AWS adapter reads one ([`crate::aws::error`]: codes
/// and messages, never the raw response).
fn sdk_error<E>(operation: &str, err: &aws_sdk_ssm::error::SdkError<E>) -> Error
where
    E: aws_sdk_ssm::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    crate::aws::error(&format!("SSM {operation}"), err, |failure| {
        Error::Host(format!("SSM {operation}: {}", failure.reason))
    })
}

/// A NON_COMPLIANT item's builder, for its details to be added.
fn non_compliant(
    id: impl Into<String>,
    title: impl Into<String>,
    severity: ComplianceSeverity,
) -> aws_sdk_ssm::types::builders::ComplianceItemEntryBuilder {
    ComplianceItemEntry::builder().id(id).title(title).severity(severity).status(ComplianceStatus::NonCompliant)
}

/// The most CVEs reported as COMPLIANT items (PutComplianceItems: "Items ... Maximum number
/// of 10000 items").
const MOST_CVE_ITEMS: usize = 1000;

/// One NON_COMPLIANT item per pending update, one for a reboot that is due, one for a newer
/// release not applied and one for a failed last cycle; a single COMPLIANT item when there
/// is none of these.
fn compliance_items(record: &Record) -> std::result::Result<Vec<ComplianceItemEntry>, aws_sdk_ssm::error::BuildError> {
    let mut items = Vec::new();
    for update in &record.pending {
        items.push(
            non_compliant(&update.name, format!("{} {} is available", update.name, update.available), severity(update))
                .details("InstalledVersion", update.current.clone().unwrap_or_default())
                .details("AvailableVersion", &update.available)
                .details("Classification", if update.security { "Security" } else { "Update" })
                .details("RebootNeeded", record.reboot_needed.to_string())
                .build()?,
        );
    }
    if let Some(reason) = &record.reboot_due {
        items.push(
            non_compliant(
                "reboot-due",
                "a reboot is due: updates are installed but not running",
                ComplianceSeverity::Medium,
            )
            .details("Reason", truncate(reason))
            .build()?,
        );
    }
    if let Some(live) = &record.livepatch
        && let Some(deferred) = &live.deferred
    {
        // Not up to date: compliant only for the CVEs the live patches cover.
        items.push(
            non_compliant(
                "kernel-deferred",
                format!(
                    "kernel {} is pending; its reboot waits until {} ({})",
                    deferred.packages.join(", "),
                    capture_time(deferred.deadline),
                    deferred.why
                ),
                ComplianceSeverity::Medium,
            )
            .details("Deadline", capture_time(deferred.deadline))
            .details("CoveredCVEs", truncate(&deferred.cves.join(" ")))
            .build()?,
        );
    }
    if let Some(newest) = &record.release_available {
        items.push(
            non_compliant(
                "release",
                format!("release {newest} is available and not applied (packages.release)"),
                ComplianceSeverity::Medium,
            )
            .details("InstalledVersion", record.release.clone().unwrap_or_default())
            .details("AvailableVersion", newest)
            .build()?,
        );
    }
    if let Some(last) = &record.last_cycle
        && let Outcome::Failed { step, kind, reason } = &last.outcome
        && kind.halts_roll()
    {
        items.push(
            non_compliant(
                "last-cycle",
                format!("the last patch cycle failed at {step} ({kind})"),
                ComplianceSeverity::High,
            )
            .details("Cycle", &last.id)
            .details("Reason", truncate(reason))
            .build()?,
        );
    }
    if items.is_empty() {
        items.push(
            ComplianceItemEntry::builder()
                .id("ecs-patchd")
                .title("no update pending")
                .severity(ComplianceSeverity::Informational)
                .status(ComplianceStatus::Compliant)
                .build()?,
        );
    }
    if let Some(live) = &record.livepatch {
        for cve in live.cves.iter().take(MOST_CVE_ITEMS) {
            items.push(
                ComplianceItemEntry::builder()
                    .id(cve)
                    .title(format!("{cve} is fixed in the running kernel by a live patch ({})", live.tool))
                    .severity(ComplianceSeverity::Informational)
                    .status(ComplianceStatus::Compliant)
                    .details("Kernel", truncate(&live.kernel))
                    .build()?,
            );
        }
    }
    Ok(items)
}

/// The advisory's severity where the repository gives one; a security fix of unknown
/// severity is UNSPECIFIED, any other update LOW.
fn severity(update: &PackageUpdate) -> ComplianceSeverity {
    match update.severity.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("critical") => ComplianceSeverity::Critical,
        Some("important" | "high") => ComplianceSeverity::High,
        Some("moderate" | "medium") => ComplianceSeverity::Medium,
        Some("low") => ComplianceSeverity::Low,
        _ if update.security => ComplianceSeverity::Unspecified,
        _ => ComplianceSeverity::Low,
    }
}

/// The one inventory entry: the last patch, its outcome, the agent and the release.
fn inventory_content(record: &Record) -> HashMap<String, String> {
    let time = |t: Option<SystemTime>| t.map(capture_time).unwrap_or_default();
    let (outcome, packages) = match record.last_cycle.as_ref().map(|c| &c.outcome) {
        Some(Outcome::Patched { packages, .. }) => ("patched", packages.join(" ")),
        Some(Outcome::NothingToDo) => ("nothing-to-do", String::new()),
        Some(Outcome::Failed { kind, .. }) => (if kind.halts_roll() { "failed" } else { "deferred" }, String::new()),
        None => ("none", String::new()),
    };
    HashMap::from([
        ("LastPatchTime".to_string(), time(record.last_patched)),
        ("LastCheckTime".to_string(), time(record.checked_at)),
        ("LastOutcome".to_string(), outcome.to_string()),
        ("AgentVersion".to_string(), record.agent_version.clone().unwrap_or_default()),
        ("Release".to_string(), record.release.clone().unwrap_or_default()),
        ("PackagesChanged".to_string(), truncate(&packages)),
        ("UpdatesPending".to_string(), record.pending.len().to_string()),
    ])
}

/// `at` as SSM wants it: `yyyy-MM-ddTHH:mm:ssZ`.
fn capture_time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// At most [`MAX_VALUE`] characters, without control characters: a failure's reason may
/// quote what a package manager or a peer said.
fn truncate(text: &str) -> String {
    crate::foreign::bounded(text, MAX_VALUE)
}
