//! The simulator's lease store: DynamoDB's conditional writes, transactions and counters in
//! memory, with DynamoDB's limits and its way of counting capacity, so that a simulated roll
//! shows what the real table would be charged and where it would throttle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::clock::SimClock;
use super::world::World;
use crate::coordination::store::{Change, Consistency, Expect, LeaseStore, Versioned, Write};
use crate::error::{Error, Result};

/// DynamoDB's limits, and the prices the report charges.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// "The maximum item size in DynamoDB is 400 KB, which includes both attribute name
    /// binary length (UTF-8 length) and attribute value lengths" (Service quotas).
    pub max_item_bytes: usize,
    /// "Each partition on the table can serve up to 3,000 read request units or 1,000 write
    /// request units" per second (on-demand tables too); one key is in one partition.
    pub read_units_per_key: f64,
    /// See `read_units_per_key`.
    pub write_units_per_key: f64,
    /// Share of requests throttled at random (a fault to survive, not a DynamoDB rule).
    pub random_throttling: f64,
    /// On-demand price per million read request units, us-east-1 (since 1 November 2024).
    pub dollars_per_million_reads: f64,
    /// On-demand price per million write request units, us-east-1 (since 1 November 2024).
    pub dollars_per_million_writes: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_item_bytes: 400 * 1024,
            read_units_per_key: 3000.0,
            write_units_per_key: 1000.0,
            random_throttling: 0.0,
            dollars_per_million_reads: 0.125,
            dollars_per_million_writes: 0.625,
        }
    }
}

/// The error of a throttled request.
const THROTTLED: &str = "DynamoDB throttled the request (ThrottlingException, simulated)";

fn is_throttle(e: &Error) -> bool {
    matches!(e, Error::Lease(m) if m == THROTTLED)
}

/// What the store was asked and charged.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    /// Requests served (a batch or a transaction is one).
    pub requests: u64,
    /// Read request units charged.
    pub read_units: f64,
    /// Write request units charged.
    pub write_units: f64,
    /// The most read units one key took in one second, and the key.
    pub peak_read_units_per_key: (f64, String),
    /// The most write units one key took in one second, and the key.
    pub peak_write_units_per_key: (f64, String),
    /// The largest item written (bytes, as DynamoDB counts them), and its key.
    pub largest_item: (usize, String),
    /// Requests refused for throughput (ThrottlingException).
    pub throttled: u64,
    /// Writes refused for an item over 400 KB.
    pub too_large: u64,
}

impl Usage {
    /// The on-demand cost of what was charged.
    pub fn dollars(&self, limits: &Limits) -> f64 {
        self.read_units / 1e6 * limits.dollars_per_million_reads
            + self.write_units / 1e6 * limits.dollars_per_million_writes
    }
}

/// One key's consumption within the current second.
#[derive(Default)]
struct Second {
    at: u64,
    read: f64,
    write: f64,
}

struct Inner {
    items: HashMap<String, Versioned>,
    seconds: HashMap<String, Second>,
    usage: Usage,
    rng: StdRng,
}

/// A lease store in memory, with DynamoDB's semantics, limits and capacity accounting.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    world: World,
    clock: Arc<SimClock>,
    limits: Limits,
}

/// The size DynamoDB counts for an item of ours: attribute names and values (`id`,
/// `version`, `body`, `updated_at`).
fn item_size(key: &str, body: &str) -> usize {
    "id".len() + key.len() + "version".len() + 21 + "body".len() + body.len() + "updated_at".len() + 24
}

/// Read units of an item: "rounded up to the next 4 KB multiple"; "an eventually consistent
/// read request of an item up to 4 KB requires one-half read unit" (read-write operations).
fn read_units(size: usize, consistency: Consistency) -> f64 {
    let units = size.div_ceil(4096).max(1) as f64;
    if consistency == Consistency::Eventual { units / 2.0 } else { units }
}

/// Write units of an item: "rounded up to the next 1 KB multiple".
fn write_units(size: usize) -> f64 {
    size.div_ceil(1024).max(1) as f64
}

impl MemoryStore {
    /// An empty store counting its operations in `world`, on `clock`.
    pub fn new(world: World, clock: Arc<SimClock>, limits: Limits) -> Self {
        let rng = StdRng::seed_from_u64(limits.random_throttling.to_bits());
        Self {
            inner: Mutex::new(Inner { items: HashMap::new(), seconds: HashMap::new(), usage: Usage::default(), rng }),
            world,
            clock,
            limits,
        }
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<Versioned> {
        self.inner.lock().expect("store").items.get(key).cloned()
    }

    /// What the store was asked and charged so far.
    pub fn usage(&self) -> Usage {
        self.inner.lock().expect("store").usage.clone()
    }

    /// The limits it applies.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Runs `request` the way the SDK sends it: a throttled attempt is tried again, up to
    /// three attempts in all, after the standard retry mode's backoff ("b * r^i, where b is
    /// a random number between 0 and 1 and r = 2", capped at 20 seconds).
    async fn send<T>(&self, mut request: impl FnMut(&mut Inner) -> Result<T>) -> Result<T> {
        const ATTEMPTS: u32 = 3;
        for attempt in 0.. {
            let outcome = {
                let mut inner = self.inner.lock().expect("store");
                match request(&mut inner) {
                    Err(e) if is_throttle(&e) && attempt + 1 < ATTEMPTS => {
                        let jitter: f64 = inner.rng.random();
                        Err(std::time::Duration::from_secs_f64((jitter * f64::from(1u32 << attempt)).min(20.0)))
                    }
                    done => Ok(done),
                }
            };
            match outcome {
                Ok(done) => return done,
                Err(backoff) => tokio::time::sleep(backoff).await,
            }
        }
        unreachable!("the loop returns")
    }

    /// Charges `charges` (key, read units, write units) as one request, or refuses it when
    /// a key would pass its partition's limit (or at random, as configured).
    fn charge(&self, inner: &mut Inner, charges: &[(&str, f64, f64)]) -> Result<()> {
        self.world.lock().expect("world").store_ops += 1;
        let second = self.clock.elapsed_ms() / 1000;
        let random = self.limits.random_throttling > 0.0 && inner.rng.random_bool(self.limits.random_throttling);
        let over = charges.iter().any(|(key, read, write)| {
            inner.seconds.get(*key).filter(|s| s.at == second).is_some_and(|s| {
                s.read + read > self.limits.read_units_per_key || s.write + write > self.limits.write_units_per_key
            })
        });
        if random || over {
            inner.usage.throttled += 1;
            return Err(Error::Lease(THROTTLED.into()));
        }
        inner.usage.requests += 1;
        for (key, read, write) in charges {
            let s = inner.seconds.entry((*key).to_string()).or_default();
            if s.at != second {
                *s = Second { at: second, ..Second::default() };
            }
            s.read += read;
            s.write += write;
            inner.usage.read_units += read;
            inner.usage.write_units += write;
            if s.read > inner.usage.peak_read_units_per_key.0 {
                inner.usage.peak_read_units_per_key = (s.read, (*key).to_string());
            }
            if s.write > inner.usage.peak_write_units_per_key.0 {
                inner.usage.peak_write_units_per_key = (s.write, (*key).to_string());
            }
        }
        Ok(())
    }

    fn size_of(inner: &Inner, key: &str) -> usize {
        inner.items.get(key).map_or(0, |v| item_size(key, &v.body))
    }

    /// Refuses an item over 400 KB, as DynamoDB does (ValidationException).
    fn check_size(&self, inner: &mut Inner, write: &Write) -> Result<()> {
        let Change::Put(body) = &write.change else { return Ok(()) };
        let size = item_size(&write.key, body);
        if size > self.limits.max_item_bytes {
            inner.usage.too_large += 1;
            return Err(Error::Lease(format!(
                "DynamoDB refused the item {} (ValidationException, simulated): {size} bytes, over the 400 KB item limit",
                write.key
            )));
        }
        if size > inner.usage.largest_item.0 {
            inner.usage.largest_item = (size, write.key.clone());
        }
        Ok(())
    }

    fn holds(inner: &Inner, write: &Write) -> bool {
        let current = inner.items.get(&write.key).map(|v| v.version);
        match write.expect {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::Version(v) => current == Some(v),
        }
    }

    fn apply(inner: &mut Inner, write: &Write) {
        match &write.change {
            Change::Delete => {
                inner.items.remove(&write.key);
            }
            Change::Put(body) => {
                let version = inner.items.get(&write.key).map_or(1, |v| v.version + 1);
                inner.items.insert(write.key.clone(), Versioned { version, body: body.clone() });
            }
            Change::Check => {}
        }
    }

    /// Write units of `write`: the larger of the item before and after.
    fn units_of(inner: &Inner, write: &Write) -> f64 {
        let after = match &write.change {
            Change::Put(body) => item_size(&write.key, body),
            Change::Delete | Change::Check => 0,
        };
        write_units(after.max(Self::size_of(inner, &write.key)))
    }
}

#[async_trait::async_trait]
impl LeaseStore for MemoryStore {
    async fn load(&self, key: &str, consistency: Consistency) -> Result<Option<Versioned>> {
        self.send(|inner| {
            let units = read_units(Self::size_of(inner, key), consistency);
            self.charge(inner, &[(key, units, 0.0)])?;
            Ok(inner.items.get(key).cloned())
        })
        .await
    }

    async fn load_many(&self, keys: &[String], consistency: Consistency) -> Result<Vec<Option<Versioned>>> {
        self.send(|inner| {
            // "DynamoDB processes each item in the batch as an individual GetItem request, so
            // DynamoDB first rounds up the size of each item to the next 4 KB boundary."
            let charges: Vec<(&str, f64, f64)> =
                keys.iter().map(|k| (k.as_str(), read_units(Self::size_of(inner, k), consistency), 0.0)).collect();
            for batch in charges.chunks(100) {
                self.charge(inner, batch)?;
            }
            Ok(keys.iter().map(|k| inner.items.get(k).cloned()).collect())
        })
        .await
    }

    async fn save(&self, write: &Write) -> Result<bool> {
        self.send(|inner| {
            self.check_size(inner, write)?;
            // "If the expression evaluates to false, DynamoDB still consumes write capacity
            // units from the table."
            let units = Self::units_of(inner, write);
            self.charge(inner, &[(write.key.as_str(), 0.0, units)])?;
            if !Self::holds(inner, write) {
                return Ok(false);
            }
            Self::apply(inner, write);
            Ok(true)
        })
        .await
    }

    async fn commit(&self, writes: &[Write]) -> Result<bool> {
        self.send(|inner| {
            for write in writes {
                self.check_size(inner, write)?;
            }
            // "Transactional write requests require two write capacity units to perform one
            // write per second for items up to 1 KB."
            let charges: Vec<(&str, f64, f64)> =
                writes.iter().map(|w| (w.key.as_str(), 0.0, 2.0 * Self::units_of(inner, w))).collect();
            self.charge(inner, &charges)?;
            if !writes.iter().all(|w| Self::holds(inner, w)) {
                return Ok(false);
            }
            for write in writes {
                Self::apply(inner, write);
            }
            Ok(true)
        })
        .await
    }

    async fn increment(&self, key: &str) -> Result<u64> {
        self.send(|inner| {
            let units = write_units(item_size(key, ""));
            self.charge(inner, &[(key, 0.0, units)])?;
            let next = inner.items.get(key).map_or(1, |v| v.version + 1);
            inner.items.insert(key.to_string(), Versioned { version: next, body: String::new() });
            Ok(next)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::world::WorldState;

    fn store(limits: Limits) -> MemoryStore {
        let world = Arc::new(std::sync::Mutex::new(WorldState::new(1, 1, 1, 0)));
        MemoryStore::new(world, Arc::new(SimClock::new(1)), limits)
    }

    fn put(key: &str, bytes: usize, expect: Expect) -> Write {
        Write { key: key.into(), change: Change::Put("x".repeat(bytes)), expect }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn capacity_is_counted_as_dynamodb_counts_it() {
        let s = store(Limits::default());
        // 1,500 bytes of body and ~70 of names and values: 2 write units.
        assert!(s.save(&put("a", 1500, Expect::Absent)).await.unwrap());
        assert_eq!(s.usage().write_units, 2.0);
        // A failed conditional write is charged all the same.
        assert!(!s.save(&put("a", 1500, Expect::Absent)).await.unwrap());
        assert_eq!(s.usage().write_units, 4.0);
        // A transaction costs twice; reads round up to 4 KB, halved when eventually consistent.
        assert!(s.commit(&[put("b", 100, Expect::Absent)]).await.unwrap());
        assert_eq!(s.usage().write_units, 6.0);
        s.load("a", Consistency::Strong).await.unwrap();
        s.load("a", Consistency::Eventual).await.unwrap();
        s.load_many(&["a".into(), "b".into()], Consistency::Strong).await.unwrap();
        assert_eq!(s.usage().read_units, 1.0 + 0.5 + 2.0);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn items_over_400_kb_and_keys_over_their_partition_rate_are_refused() {
        let s = store(Limits::default());
        let err = s.save(&put("big", 400 * 1024, Expect::Any)).await.unwrap_err().to_string();
        assert!(err.contains("400 KB"), "{err}");
        assert_eq!(s.usage().too_large, 1);
        assert!(s.get("big").is_none());
        // 100 writes of 10 units each fill the key's 1,000 for this second; the next is
        // throttled (after the SDK's retries, which run into the next second only by luck:
        // the clock stands still here but for the backoff).
        for _ in 0..100 {
            s.save(&put("hot", 9 * 1024, Expect::Any)).await.unwrap();
        }
        assert_eq!(s.usage().peak_write_units_per_key, (1000.0, "hot".to_string()));
        let before = s.usage().throttled;
        let _ = s.save(&put("hot", 9 * 1024, Expect::Any)).await;
        assert!(s.usage().throttled > before, "the 101st write in one second is throttled");
    }
}
