//! [`LeaseStore`] on a DynamoDB table.
//!
//! Key schema: partition key `id` (string), no sort key. Items: `id` =
//! `CLUSTER/GROUP` (the group record) or `CLUSTER/GROUP/snapshot`; `version` (number), `body`
//! (string, JSON), `updated_at` (string, RFC 3339). Writes are conditional puts
//! (`attribute_not_exists(id)` or `version = :seen`); reads are strongly consistent. No TTL
//! attribute: DynamoDB deletes lazily, so expiry lives in the body.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

use super::store::{LeaseStore, Versioned};
use crate::error::{Error, Result};

/// A lease table.
pub struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoStore {
    /// The table `table`, reached with `config`.
    pub fn new(config: &aws_config::SdkConfig, table: &str) -> Self {
        Self { client: aws_sdk_dynamodb::Client::new(config), table: table.to_string() }
    }
}

#[async_trait::async_trait]
impl LeaseStore for DynamoStore {
    async fn load(&self, key: &str) -> Result<Option<Versioned>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(key.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error(&self.table, "GetItem", e))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let version = item.get("version").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok());
        let body = item.get("body").and_then(|v| v.as_s().ok());
        match (version, body) {
            (Some(version), Some(body)) => Ok(Some(Versioned { version, body: body.clone() })),
            _ => Err(Error::Lease(format!("the item {key} in table {} lacks a version or a body", self.table))),
        }
    }

    async fn save(&self, key: &str, body: &str, expected: Option<u64>) -> Result<bool> {
        let next = expected.map_or(1, |v| v + 1);
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("id", AttributeValue::S(key.into()))
            .item("version", AttributeValue::N(next.to_string()))
            .item("body", AttributeValue::S(body.into()))
            .item(
                "updated_at",
                AttributeValue::S(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
            );
        put = match expected {
            None => put.condition_expression("attribute_not_exists(id)"),
            Some(seen) => put
                .condition_expression("version = :seen")
                .expression_attribute_values(":seen", AttributeValue::N(seen.to_string())),
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(false),
            Err(e) => Err(dynamo_error(&self.table, "PutItem", e)),
        }
    }
}

fn dynamo_error<E, R>(table: &str, operation: &str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    crate::aws::error(&format!("DynamoDB {operation}"), &err, |failure| {
        Error::Lease(format!("DynamoDB {operation} on table {table} failed: {}", failure.reason))
    })
}
