//! Reporting: what the host tells its operators, beside the log.
//!
//! The cycle calls a [`Reporter`] as it enters each step, while it waits, and at the events
//! an operator wants to hear of ([`Event`]). The real reporters keep the report record
//! ([`record`], through [`keeper`]) and the Prometheus metrics drawn from it ([`metrics`]), post to a webhook
//! ([`webhook`]), and keep systemd's status line ([`systemd`]); the CLI also sends SSM
//! compliance and inventory after every check and cycle ([`ssm`]). A reporter never fails
//! or delays a cycle: it logs its own errors, and anything slow runs in the background.

pub mod keeper;
pub mod metrics;
pub mod record;
pub mod ssm;
pub mod systemd;
pub mod webhook;

use std::time::SystemTime;

use crate::cycle::Cycle;
use crate::plan::Plan;

/// Something an operator may want to be told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The instance is about to be set DRAINING.
    DrainStarted,
    /// The host is about to reboot.
    Rebooting,
    /// The instance is ACTIVE again after the cycle drained it.
    BackInService,
    /// The cycle failed.
    Failed,
    /// The group's roll was paused.
    Paused,
}

impl Event {
    /// Its name in payloads, kebab-case.
    pub fn name(self) -> &'static str {
        match self {
            Event::DrainStarted => "drain-started",
            Event::Rebooting => "rebooting",
            Event::BackInService => "back-in-service",
            Event::Failed => "failed",
            Event::Paused => "paused",
        }
    }

    /// A short phrase for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Event::DrainStarted => "drain started",
            Event::Rebooting => "rebooting",
            Event::BackInService => "back in service",
            Event::Failed => "cycle failed",
            Event::Paused => "roll paused",
        }
    }
}

/// Receives the cycle's progress. Every method returns at once and cannot fail.
pub trait Reporter: Send + Sync {
    /// The cycle entered a step (already written to the journal).
    fn entered(&self, _cycle: &Cycle) {}
    /// The cycle waits in its current step, for `reason`.
    fn waiting(&self, _cycle: &Cycle, _reason: &str) {}
    /// `event` happened; `detail` says why or what.
    fn event(&self, _cycle: &Cycle, _event: Event, _detail: &str) {}
    /// Updates were looked for at `at` and `plan` found, but no cycle starts for it
    /// (`coordination.backend` is report-only).
    fn looked(&self, _plan: &Plan, _at: SystemTime) {}
}

/// Reports nothing (the simulator, tests, commands that report elsewhere).
pub struct Silent;

impl Reporter for Silent {}

/// Passes everything to several reporters, in order.
pub struct Fanout(pub Vec<Box<dyn Reporter>>);

impl Reporter for Fanout {
    fn entered(&self, cycle: &Cycle) {
        self.0.iter().for_each(|r| r.entered(cycle));
    }

    fn waiting(&self, cycle: &Cycle, reason: &str) {
        self.0.iter().for_each(|r| r.waiting(cycle, reason));
    }

    fn event(&self, cycle: &Cycle, event: Event, detail: &str) {
        self.0.iter().for_each(|r| r.event(cycle, event, detail));
    }

    fn looked(&self, plan: &Plan, at: SystemTime) {
        self.0.iter().for_each(|r| r.looked(plan, at));
    }
}

impl<T: Reporter + ?Sized> Reporter for std::sync::Arc<T> {
    fn entered(&self, cycle: &Cycle) {
        (**self).entered(cycle);
    }

    fn waiting(&self, cycle: &Cycle, reason: &str) {
        (**self).waiting(cycle, reason);
    }

    fn event(&self, cycle: &Cycle, event: Event, detail: &str) {
        (**self).event(cycle, event, detail);
    }

    fn looked(&self, plan: &Plan, at: SystemTime) {
        (**self).looked(plan, at);
    }
}
