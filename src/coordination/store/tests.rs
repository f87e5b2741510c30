//! The lease items under hosts whose reads and writes interleave.

use super::*;
use crate::coordination::policy::Budget;
use crate::coordination::{Coordinator, Decision, Grant, SlotRequest};
use crate::error::Error;
use crate::sim::clock::SimClock;
use crate::sim::ports::SimEcs;
use crate::sim::store::MemoryStore;
use crate::sim::world::WorldState;

/// A store whose reads yield, so that hosts' read-modify-write cycles interleave.
struct Interleaving(Arc<MemoryStore>);

#[async_trait::async_trait]
impl LeaseStore for Interleaving {
    async fn load(&self, key: &str, consistency: Consistency) -> Result<Option<Versioned>> {
        let value = self.0.load(key, consistency).await;
        tokio::task::yield_now().await;
        value
    }

    async fn load_many(&self, keys: &[String], consistency: Consistency) -> Result<Vec<Option<Versioned>>> {
        let value = self.0.load_many(keys, consistency).await;
        tokio::task::yield_now().await;
        value
    }

    async fn save(&self, write: &Write) -> Result<bool> {
        self.0.save(write).await
    }

    async fn commit(&self, writes: &[Write]) -> Result<bool> {
        self.0.commit(writes).await
    }

    async fn increment(&self, key: &str) -> Result<u64> {
        self.0.increment(key).await
    }
}

/// The simulated clock, as a host whose wall clock is this many seconds off sees it (ahead
/// when positive; a test may step it).
struct Skewed(Arc<SimClock>, std::sync::atomic::AtomicI64);

#[async_trait::async_trait]
impl Clock for Skewed {
    fn now(&self) -> std::time::SystemTime {
        let skew = self.1.load(std::sync::atomic::Ordering::Relaxed);
        let off = Duration::from_secs(skew.unsigned_abs());
        if skew >= 0 { self.0.now() + off } else { self.0.now() - off }
    }

    async fn sleep(&self, duration: Duration) {
        self.0.sleep(duration).await;
    }

    fn jitter(&self, base: Duration) -> Duration {
        self.0.jitter(base)
    }
}

const DAYS_30: i64 = 30 * 24 * 3600;

struct Bench {
    world: crate::sim::world::World,
    clock: Arc<SimClock>,
    memory: Arc<MemoryStore>,
}

impl Bench {
    fn new(hosts: usize) -> Self {
        let world = Arc::new(Mutex::new(WorldState::new(hosts, 1, 1)));
        let clock = Arc::new(SimClock::new(1));
        let memory = Arc::new(MemoryStore::new(Arc::clone(&world), Arc::clone(&clock), Default::default()));
        Self { world, clock, memory }
    }

    fn coordinator(&self, budget: u32) -> StoreCoordinator {
        self.skewed(budget, 0)
    }

    /// A coordinator whose host's wall clock is `skew` seconds off (ahead when positive).
    fn skewed(&self, budget: u32, skew: i64) -> StoreCoordinator {
        self.stepped(budget, Arc::new(Skewed(Arc::clone(&self.clock), skew.into())))
    }

    /// A coordinator on `clock`.
    fn stepped(&self, budget: u32, clock: Arc<Skewed>) -> StoreCoordinator {
        let settings = StoreSettings {
            cluster: "sim".into(),
            group: "default".into(),
            policy: Policy { max_unavailable: Budget::Count(budget), min_healthy_percent: 0, one_az_at_a_time: false },
            ttl: Duration::from_secs(60),
            snapshot_max_age: Duration::from_secs(60),
            on_stale: StalePolicy::Pause,
            poll: Duration::from_secs(10),
        };
        let store: Arc<dyn LeaseStore> = Arc::new(Interleaving(Arc::clone(&self.memory)));
        StoreCoordinator::new(store, clock, settings)
    }

    fn ecs(&self, host: usize) -> SimEcs {
        SimEcs { world: Arc::clone(&self.world), host, clock: Arc::clone(&self.clock), store: Arc::clone(&self.memory) }
    }

    /// `n` hosts, each its own process (its own coordinator's memory): their coordinators,
    /// requests and views of ECS.
    fn hosts(&self, n: usize, budget: u32) -> (Vec<StoreCoordinator>, Vec<SlotRequest>, Vec<SimEcs>) {
        (
            (0..n).map(|_| self.coordinator(budget)).collect(),
            (0..n).map(|h| self.request(h)).collect(),
            (0..n).map(|h| self.ecs(h)).collect(),
        )
    }

    fn request(&self, host: usize) -> SlotRequest {
        let w = self.world.lock().unwrap();
        SlotRequest {
            id: w.instances[host].id.clone(),
            arn: w.instances[host].arn.clone(),
            cycle: format!("c{host}"),
            stays: Some(Default::default()),
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hosts_can_never_take_more_slots_than_the_budget() {
    let bench = Bench::new(6);
    // Each host its own process, all asking at once, many times over.
    let (coordinators, requests, ecs) = bench.hosts(4, 2);
    let mut granted = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let ask = |h: usize| coordinators[h].acquire(&requests[h], &ecs[h]);
        let (a, b, c, d) = tokio::join!(ask(0), ask(1), ask(2), ask(3));
        for (h, decision) in [a, b, c, d].into_iter().enumerate() {
            if let Decision::Granted(g) = decision.unwrap() {
                granted.insert((h, g.token));
            }
        }
        let view = coordinators[0].view().await.unwrap();
        assert!(view.holders.len() <= 2, "{view:?}");
    }
    let view = coordinators[0].view().await.unwrap();
    assert_eq!(view.holders.len(), 2, "two of them got one: {view:?}");
    let hosts: std::collections::BTreeSet<usize> = granted.iter().map(|(h, _)| *h).collect();
    assert_eq!(hosts.len(), 2, "{granted:?}");
    assert_eq!(granted.len(), 2, "a holder asking again gets its own grant back: {granted:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_version_1_record_is_converted_when_empty_and_refused_while_held() {
    let bench = Bench::new(2);
    let legacy = |holders: &str| {
        format!(r#"{{"holders":{holders},"queue":[{{"id":"i-1","since":1}}],"paused":null,"next_token":7}}"#)
    };
    let write = |body: String| Write { key: "sim/default".into(), body: Some(body), expect: Expect::Any };
    let holder = r#"[{"id":"i-00001","arn":"a","token":6,"cycle":"c","step":"draining","availability_zone":null,
        "allocated":{"cpu":0,"memory":0},"acquired_at":0,"renewed_at":0,"expires_at":0}]"#;
    assert!(bench.memory.save(&write(legacy(holder))).await.unwrap());
    let coordinator = bench.coordinator(1);
    let err = coordinator.acquire(&bench.request(0), &bench.ecs(0)).await.unwrap_err().to_string();
    assert!(err.contains("single-item format") && err.contains("i-00001"), "{err}");
    assert!(bench.memory.save(&write(legacy("[]"))).await.unwrap());
    let decision = coordinator.acquire(&bench.request(0), &bench.ecs(0)).await.unwrap();
    assert!(matches!(decision, Decision::Granted(Grant { token: 7, .. })), "the token sequence goes on: {decision:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_head_that_stopped_asking_is_skipped() {
    let bench = Bench::new(3);
    let coordinator = bench.coordinator(1);
    let [a, b, c] = [0, 1, 2].map(|h| bench.request(h));
    assert!(matches!(coordinator.acquire(&a, &bench.ecs(0)).await.unwrap(), Decision::Granted(_)));
    // b queues, then goes silent; c queues behind it.
    assert!(matches!(coordinator.acquire(&b, &bench.ecs(1)).await.unwrap(), Decision::Wait { .. }));
    assert!(matches!(coordinator.acquire(&c, &bench.ecs(2)).await.unwrap(), Decision::Wait { .. }));
    tokio::time::advance(Duration::from_secs(61)).await;
    coordinator.release_holder(&a.id).await.unwrap();
    let decision = coordinator.acquire(&c, &bench.ecs(2)).await.unwrap();
    assert!(matches!(decision, Decision::Granted(_)), "b was skipped: {decision:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn waiters_that_left_out_of_order_do_not_stall_the_queue() {
    let bench = Bench::new(5);
    let (coordinators, requests, ecs) = bench.hosts(5, 1);
    let ask = |h: usize| coordinators[h].acquire(&requests[h], &ecs[h]);
    assert!(matches!(ask(0).await.unwrap(), Decision::Granted(_)));
    for h in 1..5 {
        assert!(matches!(ask(h).await.unwrap(), Decision::Wait { .. }));
    }
    // Hosts 2 and 3 give up, then host 1 at the head: two gone tickets at the front,
    // and host 4 two places back, where no host is right behind the head.
    for h in [2, 3, 1] {
        coordinators[h].withdraw(&requests[h]).await.unwrap();
    }
    coordinators[0].release_holder(&requests[0].id).await.unwrap();
    let mut granted = false;
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(31)).await;
        if matches!(ask(4).await.unwrap(), Decision::Granted(_)) {
            granted = true;
            break;
        }
    }
    assert!(granted, "the queue moved past the tickets left behind: {:?}", coordinators[0].view().await.unwrap());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_holders_clock_30_days_off_neither_steals_nor_holds_its_slot() {
    for skew in [-DAYS_30, DAYS_30] {
        let bench = Bench::new(2);
        let (holder, watcher) = (bench.skewed(1, skew), bench.coordinator(1));
        let (held, waiting) = (bench.request(0), bench.request(1));
        let Decision::Granted(grant) = holder.acquire(&held, &bench.ecs(0)).await.unwrap() else { panic!() };
        // Five minutes of renewals every 20 s (the TTL is 60 s): the slot stays its own.
        for _ in 0..15 {
            tokio::time::advance(Duration::from_secs(10)).await;
            assert!(holder.renew(&grant, &held.id, "draining", Duration::from_secs(60)).await.unwrap());
            for _ in 0..2 {
                let decision = watcher.acquire(&waiting, &bench.ecs(1)).await.unwrap();
                assert!(matches!(decision, Decision::Wait { .. }), "skew {skew}: {decision:?}");
                tokio::time::advance(Duration::from_secs(5)).await;
            }
        }
        // It dies: the roll pauses once the watcher has seen no renewal for the hold.
        let mut waited = Duration::ZERO;
        let reason = loop {
            if let Decision::Paused(reason) = watcher.acquire(&waiting, &bench.ecs(1)).await.unwrap() {
                break reason;
            }
            tokio::time::advance(Duration::from_secs(10)).await;
            waited += Duration::from_secs(10);
            assert!(waited <= Duration::from_secs(120), "skew {skew}: the dead holder still holds");
        };
        assert!(waited >= Duration::from_secs(50), "skew {skew}: paused after {waited:?}");
        assert!(reason.contains(&held.id) && reason.contains("not renewed for"), "{reason}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_waiter_is_skipped_for_its_silence_not_for_its_clock() {
    let bench = Bench::new(4);
    let clocks = [0, DAYS_30, -DAYS_30, 0];
    let coordinators: Vec<_> = clocks.iter().map(|skew| bench.skewed(1, *skew)).collect();
    let requests: Vec<_> = (0..4).map(|h| bench.request(h)).collect();
    let ecs: Vec<_> = (0..4).map(|h| bench.ecs(h)).collect();
    let ask = |h: usize| coordinators[h].acquire(&requests[h], &ecs[h]);
    assert!(matches!(ask(0).await.unwrap(), Decision::Granted(_)));
    // Host 1 (clock 30 days ahead) queues and goes silent; host 2 (30 days behind) queues
    // and keeps asking; host 3 queues behind it.
    for h in 1..4 {
        assert!(matches!(ask(h).await.unwrap(), Decision::Wait { .. } | Decision::Check));
    }
    coordinators[0].release_holder(&requests[0].id).await.unwrap();
    let mut granted = None;
    for look in 1..=30 {
        tokio::time::advance(Duration::from_secs(10)).await;
        for h in [2, 3] {
            if matches!(ask(h).await.unwrap(), Decision::Granted(_)) {
                granted = Some((h, look * 10));
            }
        }
        if granted.is_some() {
            break;
        }
    }
    let (host, after) = granted.expect("the silent waiter was never skipped");
    assert_eq!(host, 2, "the waiter whose clock runs behind was skipped while it asked");
    assert!((60..=120).contains(&after), "skipped the silent waiter after {after} s");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_slot_left_by_a_cycle_whose_journal_was_lost_is_given_back() {
    let bench = Bench::new(2);
    let lost = bench.request(0);
    assert!(matches!(bench.coordinator(1).acquire(&lost, &bench.ecs(0)).await.unwrap(), Decision::Granted(_)));
    let again = SlotRequest { cycle: "c0-after-the-loss".into(), ..bench.request(0) };
    let coordinator = bench.coordinator(1);
    // While the instance is DRAINING under the old cycle's mark, that cycle's slot is kept
    // and nothing new starts (the next run takes the drain up).
    {
        let instance = &mut bench.world.lock().unwrap().instances[0];
        instance.status = "DRAINING".into();
        instance.drained_by = Some(lost.cycle.clone());
    }
    let kept = coordinator.acquire(&again, &bench.ecs(0)).await.unwrap_err();
    assert!(matches!(&kept, Error::Deferred(why) if why.contains("still drains it")), "{kept}");
    // The journal was lost before the drain's mark: the next process runs a new cycle.
    {
        let instance = &mut bench.world.lock().unwrap().instances[0];
        instance.status = "ACTIVE".into();
        instance.drained_by = None;
    }
    let coordinator = bench.coordinator(1);
    let decision = coordinator.acquire(&again, &bench.ecs(0)).await.unwrap();
    assert!(matches!(decision, Decision::Granted(_)), "it does not wait behind itself: {decision:?}");
    let holders = coordinator.view().await.unwrap().holders;
    assert_eq!(holders.iter().map(|h| h.cycle.as_str()).collect::<Vec<_>>(), ["c0-after-the-loss"]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_wall_clock_jump_never_stretches_a_lease() {
    let bench = Bench::new(2);
    let clock = Arc::new(Skewed(Arc::clone(&bench.clock), 0.into()));
    let holder = bench.stepped(1, Arc::clone(&clock));
    let request = bench.request(0);
    let Decision::Granted(grant) = holder.acquire(&request, &bench.ecs(0)).await.unwrap() else { panic!() };
    let hold = |view: operator::GroupView| view.holders[0].hold();
    // Held over a reboot (30 minutes), then renewed for the TTL: what is left of the longer hold.
    assert!(holder.renew(&grant, &request.id, "rebooting", Duration::from_secs(1800)).await.unwrap());
    tokio::time::advance(Duration::from_secs(600)).await;
    assert!(holder.renew(&grant, &request.id, "returning", Duration::from_secs(60)).await.unwrap());
    assert_eq!(hold(holder.view().await.unwrap()), Duration::from_secs(1200));
    // The wall clock jumps 30 days ahead, then back (NTP mends it): each renewal holds for
    // the TTL. Before, the expiry written while ahead held the slot for 30 days.
    for skew in [DAYS_30, 0] {
        clock.1.store(skew, std::sync::atomic::Ordering::Relaxed);
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(holder.renew(&grant, &request.id, "returning", Duration::from_secs(60)).await.unwrap());
        assert_eq!(hold(holder.view().await.unwrap()), Duration::from_secs(60), "clock {skew}");
    }
}
