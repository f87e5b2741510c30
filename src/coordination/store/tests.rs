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
        let world = Arc::new(Mutex::new(WorldState::new(hosts, 1, 1, 0)));
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
            needs: Vec::new(),
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
    let write = |body: String| Write { key: "sim/default".into(), change: Change::Put(body), expect: Expect::Any };
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
    coordinator.release_holder(&a.id, "operator test").await.unwrap();
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
    coordinators[0].release_holder(&requests[0].id, "operator test").await.unwrap();
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
    coordinators[0].release_holder(&requests[0].id, "operator test").await.unwrap();
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

/// Writes `control` as a peer would: the control item every host may write.
async fn peer_writes_control(bench: &Bench, change: impl FnOnce(&mut items::Control)) {
    let stored = bench.memory.load("sim/default", Consistency::Strong).await.unwrap().unwrap();
    let mut control: items::Control = serde_json::from_str(&stored.body).unwrap();
    change(&mut control);
    let write = StoreCoordinator::put("sim/default".into(), &control, Expect::Version(stored.version));
    assert!(bench.memory.save(&write).await.unwrap());
}

/// Asks until the answer is neither a wait nor a check (a few rounds), and answers it.
async fn asked(coordinator: &StoreCoordinator, request: &SlotRequest, ecs: &SimEcs) -> Decision {
    for _ in 0..10 {
        match coordinator.acquire(request, ecs).await.unwrap() {
            Decision::Wait { .. } | Decision::Check => tokio::time::advance(Duration::from_secs(4)).await,
            decided => return decided,
        }
    }
    panic!("no decision after ten asks")
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_peer_that_clears_the_pause_in_the_control_item_resumes_nothing() {
    let bench = Bench::new(3);
    let (coordinators, requests, ecs) = bench.hosts(3, 1);
    coordinators[0].pause("a drain timed out", &requests[0].id).await.unwrap();
    // The peer (host 2, compromised) clears the hint: the control item is every host's to write.
    peer_writes_control(&bench, |c| c.paused = None).await;
    let decision = asked(&coordinators[1], &requests[1], &ecs[1]).await;
    assert!(matches!(&decision, Decision::Paused(why) if why.contains("a drain timed out")), "{decision:?}");
    let view = coordinators[1].view().await.unwrap();
    assert!(view.holders.is_empty(), "{view:?}");
    assert!(view.control.unwrap().paused.is_some(), "the head put the hint back");
    // Only the operator's resume, which writes what no host may, lets the roll go on.
    assert!(coordinators[2].resume("operator test").await.unwrap());
    assert!(matches!(asked(&coordinators[1], &requests[1], &ecs[1]).await, Decision::Granted(_)));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_pause_in_the_control_item_that_no_pause_item_backs_stops_nobody() {
    let bench = Bench::new(2);
    let (coordinators, requests, ecs) = bench.hosts(2, 1);
    coordinators[0].view().await.unwrap();
    // Left by a host that read the pause before an operator lifted it, or written by a peer.
    peer_writes_control(&bench, |c| c.paused = Some(items::pause("stale", "i-peer", 0))).await;
    assert!(coordinators[1].paused().await.unwrap().is_none());
    assert!(matches!(asked(&coordinators[1], &requests[1], &ecs[1]).await, Decision::Granted(_)));
    assert!(coordinators[0].view().await.unwrap().control.unwrap().paused.is_none(), "the hint was cleared");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_resume_lifts_the_pauses_a_peer_created_ahead_and_a_pause_after_it_stops_the_roll_again() {
    let bench = Bench::new(2);
    let (coordinators, requests, ecs) = bench.hosts(2, 1);
    coordinators[0].pause("first", "i-a").await.unwrap();
    // A peer creates the next pauses ahead of time, hoping to outlast a resume.
    for n in 2..=4 {
        let write = StoreCoordinator::put(
            format!("sim/default/pause/{n}"),
            &items::pause("ahead", "i-peer", 0),
            Expect::Absent,
        );
        assert!(bench.memory.save(&write).await.unwrap());
    }
    assert!(coordinators[1].resume("operator test").await.unwrap());
    assert!(coordinators[1].paused().await.unwrap().is_none());
    assert!(!coordinators[1].resume("operator test").await.unwrap(), "nothing left to lift");
    coordinators[0].pause("second", "i-a").await.unwrap();
    let decision = asked(&coordinators[1], &requests[1], &ecs[1]).await;
    assert!(matches!(&decision, Decision::Paused(why) if why.contains("second")), "{decision:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_slot_emptied_by_a_peer_pauses_the_roll_and_one_freed_by_an_operator_does_not() {
    for by_operator in [false, true] {
        let bench = Bench::new(3);
        let (coordinators, requests, ecs) = bench.hosts(3, 1);
        let Decision::Granted(grant) = asked(&coordinators[0], &requests[0], &ecs[0]).await else { panic!() };
        assert!(coordinators[0].renew(&grant, &requests[0].id, "draining", Duration::from_secs(60)).await.unwrap());
        if by_operator {
            assert!(coordinators[2].release_holder(&requests[0].id, "operator test").await.unwrap());
        } else {
            let write = StoreCoordinator::put("sim/default/slot/0".into(), &items::Slot::default(), Expect::Any);
            assert!(bench.memory.save(&write).await.unwrap());
        }
        let held = coordinators[0].renew(&grant, &requests[0].id, "draining", Duration::from_secs(60)).await.unwrap();
        assert!(!held, "the slot is gone either way");
        let paused = coordinators[1].paused().await.unwrap();
        if by_operator {
            assert_eq!(paused, None);
        } else {
            let why = paused.expect("a theft pauses the roll");
            assert!(why.contains("slot 0") && why.contains(&requests[0].id) && why.contains("valid lease"), "{why}");
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_slot_emptied_while_its_holder_reboots_pauses_the_roll_when_it_takes_the_cycle_up_again() {
    let bench = Bench::new(2);
    let dir = tempfile::tempdir().unwrap();
    let watch = || Some(watch::WatchFile { path: dir.path().join("watched.json"), boot_id: "boot-1".into() });
    let request = bench.request(0);
    let before = bench.coordinator(1).with_watch_file(watch());
    let Decision::Granted(grant) = asked(&before, &request, &bench.ecs(0)).await else { panic!() };
    // The renewal before the reboot holds for ten minutes; the process then ends.
    assert!(before.renew(&grant, &request.id, "rebooting", Duration::from_secs(600)).await.unwrap());
    drop(before);
    let write = StoreCoordinator::put("sim/default/slot/0".into(), &items::Slot::default(), Expect::Any);
    assert!(bench.memory.save(&write).await.unwrap());
    tokio::time::advance(Duration::from_secs(60)).await;
    // After the boot: another process, the same state directory.
    let after = bench.coordinator(1).with_watch_file(watch());
    assert!(!after.renew(&grant, &request.id, "returning", Duration::from_secs(60)).await.unwrap());
    let why = after.paused().await.unwrap().expect("the theft is seen across the reboot");
    assert!(why.contains("slot 0") && why.contains("valid lease"), "{why}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_slot_forged_to_name_a_waiting_host_is_given_back_while_the_roll_is_paused() {
    let bench = Bench::new(2);
    let (coordinators, requests, ecs) = bench.hosts(2, 1);
    coordinators[0].pause("a failure", "i-other").await.unwrap();
    // A peer writes a slot item naming host 1 and its cycle, as a lost grant would look.
    let holder = crate::coordination::policy::Holder {
        id: requests[1].id.clone(),
        arn: requests[1].arn.clone(),
        token: 99,
        cycle: requests[1].cycle.clone(),
        step: "waiting-for-slot".into(),
        availability_zone: None,
        allocated: Default::default(),
        stays: Default::default(),
        acquired_at: 0,
        renewed_at: 0,
        expires_at: 0,
        hold_ms: 60_000,
        needs: Vec::new(),
    };
    let forged = items::Slot { holder: Some(holder), released: Vec::new() };
    assert!(
        bench.memory.save(&StoreCoordinator::put("sim/default/slot/0".into(), &forged, Expect::Any)).await.unwrap()
    );
    peer_writes_control(&bench, |c| c.slots = 1).await;
    let decision = coordinators[1].acquire(&requests[1], &ecs[1]).await.unwrap();
    assert!(matches!(&decision, Decision::Paused(why) if why.contains("a failure")), "{decision:?}");
    assert!(coordinators[1].view().await.unwrap().holders.is_empty(), "the forged slot was given back");
}

/// A store that notes the IAM action and key of every request.
struct Recording(Arc<MemoryStore>, Mutex<Vec<(&'static str, String)>>);

impl Recording {
    fn note(&self, action: &'static str, key: &str) {
        self.1.lock().unwrap().push((action, key.to_string()));
    }

    fn write_action(write: &Write) -> &'static str {
        match (&write.change, write.expect) {
            (Change::Put(_), Expect::Any) => "dynamodb:UpdateItem",
            (Change::Put(_), _) => "dynamodb:PutItem",
            (Change::Delete, _) => "dynamodb:DeleteItem",
            (Change::Check, _) => "dynamodb:ConditionCheckItem",
        }
    }
}

#[async_trait::async_trait]
impl LeaseStore for Recording {
    async fn load(&self, key: &str, consistency: Consistency) -> Result<Option<Versioned>> {
        self.note("dynamodb:GetItem", key);
        self.0.load(key, consistency).await
    }

    async fn load_many(&self, keys: &[String], consistency: Consistency) -> Result<Vec<Option<Versioned>>> {
        keys.iter().for_each(|k| self.note("dynamodb:BatchGetItem", k));
        self.0.load_many(keys, consistency).await
    }

    async fn save(&self, write: &Write) -> Result<bool> {
        self.note(Self::write_action(write), &write.key);
        self.0.save(write).await
    }

    async fn commit(&self, writes: &[Write]) -> Result<bool> {
        writes.iter().for_each(|w| self.note(Self::write_action(w), &w.key));
        self.0.commit(writes).await
    }

    async fn increment(&self, key: &str) -> Result<u64> {
        self.note("dynamodb:UpdateItem", key);
        self.0.increment(key).await
    }
}

/// IAM's `StringLike`: `*` any run of characters, `?` one.
fn like(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern.len() == text.len() && pattern.chars().zip(text.chars()).all(|(p, t)| p == '?' || p == t),
        Some((head, rest)) => {
            text.len() >= head.len()
                && like(head, &text[..head.len()])
                && (head.len()..=text.len()).any(|at| like(rest, &text[at..]))
        }
    }
}

/// Whether the policy file `name` lets its role do `action` on the lease item `key` of
/// cluster `sim`: an Allow statement on the lease table matches and no Deny does.
fn policy_allows(name: &str, action: &str, key: &str) -> bool {
    let path = format!("{}/packaging/iam/{name}", env!("CARGO_MANIFEST_DIR"));
    let policy: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let matches = |statement: &serde_json::Value| {
        let on_table = statement["Resource"].as_str().unwrap().contains(":table/${LeaseTable}");
        let acts = statement["Action"].as_array().unwrap().iter().any(|a| a == action);
        on_table
            && acts
            && statement["Condition"].as_object().into_iter().flatten().all(|(operator, keys)| {
                assert!(operator.ends_with(":StringLike"), "{operator}");
                let patterns = keys["dynamodb:LeadingKeys"].as_array().unwrap();
                patterns.iter().any(|p| like(&p.as_str().unwrap().replace("${ClusterName}", "sim"), key))
            })
    };
    let statements = policy["Statement"].as_array().unwrap();
    statements.iter().any(|s| s["Effect"] == "Allow" && matches(s))
        && !statements.iter().any(|s| s["Effect"] == "Deny" && matches(s))
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_host_policy_allows_what_a_roll_writes_and_denies_what_only_operators_may() {
    let bench = Bench::new(3);
    let [hosts, operator] = [(), ()].map(|_| Arc::new(Recording(Arc::clone(&bench.memory), Mutex::default())));
    let coordinator = |store: &Arc<Recording>| {
        let settings = StoreSettings {
            cluster: "sim".into(),
            group: "default".into(),
            policy: Policy { max_unavailable: Budget::Count(1), min_healthy_percent: 0, one_az_at_a_time: false },
            ttl: Duration::from_secs(60),
            snapshot_max_age: Duration::from_secs(60),
            on_stale: StalePolicy::Pause,
            poll: Duration::from_secs(10),
        };
        StoreCoordinator::new(Arc::clone(store) as Arc<dyn LeaseStore>, Arc::clone(&bench.clock) as _, settings)
    };
    // A roll with everything a host does to the items: queue, grant, renew, release, pause.
    let host = coordinator(&hosts);
    let [a, b] = [0, 1].map(|h| bench.request(h));
    let Decision::Granted(grant) = asked(&host, &a, &bench.ecs(0)).await else { panic!() };
    host.renew(&grant, &a.id, "draining", Duration::from_secs(60)).await.unwrap();
    assert!(matches!(host.acquire(&b, &bench.ecs(1)).await.unwrap(), Decision::Wait { .. }));
    host.release(&grant, &a.id).await.unwrap();
    host.pause("a failure", &b.id).await.unwrap();
    // What only operators do: lift the pause, free another host's slot.
    let fleet = coordinator(&operator);
    fleet.resume("operator test").await.unwrap();
    let Decision::Granted(_) = asked(&host, &b, &bench.ecs(1)).await else { panic!() };
    fleet.release_holder(&b.id, "operator test").await.unwrap();

    let host_policy = "ecs-patchd-policy.json";
    let done = hosts.1.lock().unwrap().clone();
    for (action, key) in &done {
        assert!(policy_allows(host_policy, action, key), "the host's role may not {action} {key}");
    }
    for action in ["dynamodb:PutItem", "dynamodb:ConditionCheckItem", "dynamodb:DeleteItem"] {
        assert!(done.iter().any(|(a, _)| a == &action), "the roll did no {action}: {done:?}");
    }
    let operators_only: Vec<_> = operator
        .1
        .lock()
        .unwrap()
        .iter()
        .filter(|(a, k)| k.contains("/operator/") && !a.ends_with("GetItem"))
        .cloned()
        .collect();
    assert_eq!(operators_only.len(), 2, "the resume and the release mark: {operators_only:?}");
    for (action, key) in operators_only {
        assert!(policy_allows("ecs-patchd-operator-policy.json", action, &key), "{action} {key}");
        for attempt in ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"] {
            assert!(!policy_allows(host_policy, attempt, &key), "a host may {attempt} {key}");
        }
    }
    // A host creates pauses, and removes none.
    assert!(done.iter().any(|(a, k)| *a == "dynamodb:PutItem" && k == "sim/default/pause/1"), "{done:?}");
    assert!(!policy_allows(host_policy, "dynamodb:DeleteItem", "sim/default/pause/1"));
    assert!(policy_allows("ecs-patchd-operator-policy.json", "dynamodb:DeleteItem", "sim/default/pause/1"));
}
