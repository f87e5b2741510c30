//! [`LeaseStore`] on a DynamoDB table.
//!
//! Key schema: partition key `id` (string), no sort key. Items: `id` (the key),
//! `version` (number), `body` (string, JSON), `updated_at` (string, RFC 3339); a counter is
//! an item whose `version` is raised with `ADD`. Writes are conditional (`attribute_not_exists(id)`
//! or `version = :seen`); a transaction writes several items or none. No TTL attribute:
//! DynamoDB deletes lazily, so expiry lives in the body.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, KeysAndAttributes, Put, ReturnValue, TransactWriteItem, Update,
};

use super::store::{Change, Consistency, Expect, LeaseStore, Versioned, Write};
use crate::error::{Error, Result};

/// A lease table.
pub struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// BatchGetItem: "a single operation can retrieve up to 16 MB of data, which can contain as
/// many as 100 items."
const BATCH_GET_MAX: usize = 100;
/// Rounds of retrying a batch's unprocessed keys before giving up (with backoff).
const UNPROCESSED_ROUNDS: u32 = 8;

type Item = HashMap<String, AttributeValue>;

impl DynamoStore {
    /// The table `table`, reached with `config`.
    pub fn new(config: &aws_config::SdkConfig, table: &str) -> Self {
        Self { client: aws_sdk_dynamodb::Client::new(config), table: table.to_string() }
    }

    fn key(key: &str) -> Item {
        HashMap::from([("id".to_string(), AttributeValue::S(key.to_string()))])
    }

    /// The item as the store's readers take it. One that lacks a version or a body (a
    /// peer may write any attributes) is still there: version 0 and an empty body, which
    /// the reader refuses as not understood, naming the item; a pause item stays a pause.
    fn versioned(item: &Item) -> Versioned {
        let version = item.get("version").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok());
        let body = item.get("body").and_then(|v| v.as_s().ok());
        Versioned { version: version.unwrap_or(0), body: body.cloned().unwrap_or_default() }
    }

    /// The condition of `expect`: expression and values.
    fn condition(expect: Expect) -> Option<(&'static str, Option<Item>)> {
        match expect {
            Expect::Any => None,
            Expect::Absent => Some(("attribute_not_exists(id)", None)),
            Expect::Version(seen) => Some((
                "version = :seen",
                Some(HashMap::from([(":seen".to_string(), AttributeValue::N(seen.to_string()))])),
            )),
        }
    }

    /// The item a conditional write puts: its version is the expected one plus one.
    fn item(key: &str, body: &str, expect: Expect) -> Item {
        let next = match expect {
            Expect::Version(v) => v + 1,
            Expect::Absent | Expect::Any => 1,
        };
        HashMap::from([
            ("id".to_string(), AttributeValue::S(key.to_string())),
            ("version".to_string(), AttributeValue::N(next.to_string())),
            ("body".to_string(), AttributeValue::S(body.to_string())),
            (
                "updated_at".to_string(),
                AttributeValue::S(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
            ),
        ])
    }

    /// An unconditional write does not know the stored version: it raises it where it is.
    const OVERWRITE: &'static str = "SET body = :body, updated_at = :at ADD version :one";

    fn overwrite_values(body: &str) -> Item {
        HashMap::from([
            (":body".to_string(), AttributeValue::S(body.to_string())),
            (
                ":at".to_string(),
                AttributeValue::S(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
            ),
            (":one".to_string(), AttributeValue::N("1".into())),
        ])
    }

    fn transact_item(&self, write: &Write) -> Result<TransactWriteItem> {
        let condition = Self::condition(write.expect);
        let built = match &write.change {
            Change::Put(body) if write.expect == Expect::Any => Update::builder()
                .table_name(&self.table)
                .set_key(Some(Self::key(&write.key)))
                .update_expression(Self::OVERWRITE)
                .set_expression_attribute_values(Some(Self::overwrite_values(body)))
                .build()
                .map(|u| TransactWriteItem::builder().update(u).build()),
            Change::Put(body) => {
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(Self::item(&write.key, body, write.expect)))
                    .set_condition_expression(condition.as_ref().map(|(c, _)| (*c).to_string()))
                    .set_expression_attribute_values(condition.and_then(|(_, v)| v))
                    .build();
                put.map(|p| TransactWriteItem::builder().put(p).build())
            }
            Change::Delete => {
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(Self::key(&write.key)))
                    .set_condition_expression(condition.as_ref().map(|(c, _)| (*c).to_string()))
                    .set_expression_attribute_values(condition.and_then(|(_, v)| v))
                    .build();
                delete.map(|d| TransactWriteItem::builder().delete(d).build())
            }
            // "ConditionCheck: Applies a condition to an item that is not being modified by the
            // transaction" (TransactWriteItems); its IAM action is dynamodb:ConditionCheckItem.
            Change::Check => {
                let (expression, values) = condition
                    .ok_or_else(|| Error::Lease(format!("a condition check of {} without a condition", write.key)))?;
                let check = ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(Self::key(&write.key)))
                    .condition_expression(expression)
                    .set_expression_attribute_values(values)
                    .build();
                check.map(|c| TransactWriteItem::builder().condition_check(c).build())
            }
        };
        built.map_err(|e| Error::Lease(format!("cannot build a DynamoDB transaction item: {e}")))
    }
}

#[async_trait::async_trait]
impl LeaseStore for DynamoStore {
    fn name(&self) -> String {
        format!("DynamoDB table {}", self.table)
    }

    async fn load(&self, key: &str, consistency: Consistency) -> Result<Option<Versioned>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(key.into()))
            .consistent_read(consistency == Consistency::Strong)
            .send()
            .await
            .map_err(|e| dynamo_error(&self.table, "GetItem", e))?;
        Ok(out.item().map(Self::versioned))
    }

    async fn load_many(&self, keys: &[String], consistency: Consistency) -> Result<Vec<Option<Versioned>>> {
        let mut found: HashMap<String, Versioned> = HashMap::new();
        for batch in keys.chunks(BATCH_GET_MAX) {
            let mut pending: Vec<Item> = batch.iter().map(|k| Self::key(k)).collect();
            let mut round = 0;
            while !pending.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(consistency == Consistency::Strong)
                    .build()
                    .map_err(|e| Error::Lease(format!("cannot build a DynamoDB batch read: {e}")))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| dynamo_error(&self.table, "BatchGetItem", e))?;
                for item in out.responses().and_then(|r| r.get(&self.table)).into_iter().flatten() {
                    let key = item.get("id").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                    found.insert(key, Self::versioned(item));
                }
                // "If DynamoDB returns any unprocessed items, you should retry the batch
                // operation on those items. However, we strongly recommend that you use an
                // exponential backoff algorithm" (BatchGetItem).
                pending = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .map(|k| k.keys().to_vec())
                    .unwrap_or_default();
                if !pending.is_empty() {
                    round += 1;
                    if round > UNPROCESSED_ROUNDS {
                        return Err(Error::Lease(format!(
                            "DynamoDB BatchGetItem on table {} left {} key(s) unprocessed after {UNPROCESSED_ROUNDS} retries",
                            self.table,
                            pending.len()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(50 << round.min(6))).await;
                }
            }
        }
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }

    async fn save(&self, write: &Write) -> Result<bool> {
        let condition = Self::condition(write.expect);
        let (expression, values) = (condition.as_ref().map(|(c, _)| (*c).to_string()), condition.and_then(|(_, v)| v));
        match &write.change {
            Change::Put(body) if write.expect == Expect::Any => {
                let sent = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(Self::key(&write.key)))
                    .update_expression(Self::OVERWRITE)
                    .set_expression_attribute_values(Some(Self::overwrite_values(body)))
                    .send()
                    .await;
                written(&self.table, "UpdateItem", sent)
            }
            Change::Put(body) => {
                let sent = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(Self::item(&write.key, body, write.expect)))
                    .set_condition_expression(expression)
                    .set_expression_attribute_values(values)
                    .send()
                    .await;
                written(&self.table, "PutItem", sent)
            }
            Change::Check => Err(Error::Lease(format!("a condition check of {} outside a transaction", write.key))),
            Change::Delete => {
                let sent = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(Self::key(&write.key)))
                    .set_condition_expression(expression)
                    .set_expression_attribute_values(values)
                    .send()
                    .await;
                written(&self.table, "DeleteItem", sent)
            }
        }
    }

    async fn commit(&self, writes: &[Write]) -> Result<bool> {
        let items = writes.iter().map(|w| self.transact_item(w)).collect::<Result<Vec<_>>>()?;
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(true),
            // "The entire transaction request was canceled": a condition did not hold
            // (ConditionalCheckFailed) or another transaction held an item
            // (TransactionConflict). Both mean: read again.
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), TransactWriteItemsError::TransactionCanceledException(c)
                    if c.cancellation_reasons().iter().any(|r| matches!(r.code(), Some("ConditionalCheckFailed" | "TransactionConflict")))) =>
            {
                Ok(false)
            }
            Err(e) => Err(dynamo_error(&self.table, "TransactWriteItems", e)),
        }
    }

    async fn increment(&self, key: &str) -> Result<u64> {
        // An atomic counter: "incremented, unconditionally, without interfering with other
        // write requests" (Working with items).
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(key.into()))
            .update_expression("ADD version :one SET body = if_not_exists(body, :empty)")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":empty", AttributeValue::S(String::new()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| dynamo_error(&self.table, "UpdateItem", e))?;
        out.attributes()
            .and_then(|a| a.get("version"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                Error::Lease(format!("DynamoDB UpdateItem on {key} in table {} returned no counter", self.table))
            })
    }
}

/// `Ok(true)` when the write was made, `Ok(false)` when its condition did not hold
/// (ConditionalCheckFailedException).
fn written<O, E>(table: &str, operation: &str, sent: std::result::Result<O, SdkError<E>>) -> Result<bool>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match sent {
        Ok(_) => Ok(true),
        // A write meeting a transaction under way on the item fails with
        // TransactionConflictException, which the SDK does not retry: read again, as for a
        // condition that did not hold.
        Err(SdkError::ServiceError(e))
            if matches!(e.err().code(), Some("ConditionalCheckFailedException" | "TransactionConflictException")) =>
        {
            Ok(false)
        }
        Err(e) => Err(dynamo_error(table, operation, e)),
    }
}

fn dynamo_error<E>(table: &str, operation: &str, err: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    crate::aws::error(&format!("DynamoDB {operation} on table {table}"), &err, |failure| {
        Error::Lease(format!("DynamoDB {operation} on table {table} failed: {}", failure.reason))
    })
}
