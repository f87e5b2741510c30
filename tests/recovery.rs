//! kill -9 at every step boundary, and between two side effects inside a step, then run
//! again as boot would: the same end state, and no step's effect happens twice (one drain,
//! one upgrade per package, one reboot). Each point runs with no coordination and with a
//! real DynamoDB lease, whose item must end empty: no slot leaked, none granted twice.

mod common;

use common::{Options, TestHost, assert_one_slot_released, assert_patched};

/// Runs with the fault armed until the process dies at `point`, then to the end without it.
fn crash_at(point: &str, lease: bool) {
    let host = if lease { TestHost::start(Options::dynamodb_leases()) } else { TestHost::start(Options::default()) };
    let mut hit = false;
    for _ in 0..4 {
        let run = host.run_with(&["run"], &[("ECS_PATCHD_FAULT_KILL", point)]);
        if run.stderr.contains("fault injection: killing the process") {
            hit = true;
            break;
        }
        assert!(run.rebooted(), "{point}: the run ended before reaching the point: {run:?}");
    }
    assert!(hit, "{point} was never reached");
    let runs = host.run_to_end();
    assert_eq!(runs.last().unwrap().code, 0, "{point}: {runs:#?}");
    assert_patched(&host);
    assert_eq!(host.calls("UpdateContainerInstancesState:ACTIVE"), 1, "{point}: reactivated once");
    if lease {
        assert_one_slot_released(&host, point);
    }
}

macro_rules! crash_tests {
    ($($name:ident => $point:literal,)*) => {
        mod no_coordination {
            $(
                #[test]
                fn $name() {
                    super::crash_at($point, false);
                }
            )*
        }
        mod dynamodb_lease {
            $(
                #[test]
                fn $name() {
                    super::crash_at($point, true);
                }
            )*
        }
    };
}

crash_tests! {
    kill_after_downloading_is_recorded => "downloading:persisted",
    kill_after_the_download => "downloading:done",
    kill_after_waiting_for_a_slot_is_recorded => "waiting-for-slot:persisted",
    kill_after_the_slot_is_granted => "waiting-for-slot:done",
    kill_after_draining_is_recorded => "draining:persisted",
    kill_between_marking_and_draining => "draining:marked",
    kill_after_the_drain => "draining:done",
    kill_after_installing_is_recorded => "installing:persisted",
    kill_after_the_install => "installing:done",
    kill_after_rebooting_is_recorded => "rebooting:persisted",
    kill_after_the_reboot_is_seen => "rebooting:done",
    kill_after_returning_is_recorded => "returning:persisted",
    kill_after_the_agent_reconnected => "returning:done",
    kill_after_reactivating_is_recorded => "reactivating:persisted",
    kill_between_active_and_removing_the_mark => "reactivating:activated",
    kill_after_the_reactivation => "reactivating:done",
    kill_after_releasing_is_recorded => "releasing:persisted",
    kill_after_the_release => "releasing:done",
}
