//! The reporter that keeps the report record ([`super::record`]) and the metrics textfile
//! ([`super::metrics`]) up to date as a cycle runs.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use super::record::Record;
use super::{Reporter, metrics};
use crate::cycle::{Cycle, State};
use crate::plan::Plan;

/// A [`Reporter`] that keeps the record (and the metrics textfile) up to date as a
/// cycle runs: its plan when it starts, its outcome when it ends.
pub struct Keeper {
    state_dir: PathBuf,
    textfile: Option<PathBuf>,
    lock: Mutex<()>,
}

impl Keeper {
    /// Keeps the record of `state_dir`, and rewrites `textfile` (if any) at every step.
    pub fn new(state_dir: &Path, textfile: Option<PathBuf>) -> Self {
        Self { state_dir: state_dir.to_path_buf(), textfile, lock: Mutex::new(()) }
    }

    /// Saves `record` and rewrites the metrics textfile from it.
    fn keep(&self, record: &Record, cycle: Option<&Cycle>) {
        record.save(&self.state_dir);
        if let Some(path) = &self.textfile {
            metrics::write_textfile(path, record, cycle);
        }
    }
}

impl Reporter for Keeper {
    fn entered(&self, cycle: &Cycle) {
        let _one_at_a_time = self.lock.lock().expect("record lock");
        let mut record = Record::load(&self.state_dir);
        match &cycle.state {
            State::Downloading { plan, .. } => record.looked(cycle.started_at, plan),
            State::Done { .. } => record.ended(cycle),
            _ => {}
        }
        self.keep(&record, Some(cycle));
    }

    fn looked(&self, plan: &Plan, at: SystemTime) {
        let _one_at_a_time = self.lock.lock().expect("record lock");
        let mut record = Record::load(&self.state_dir);
        record.looked(at, plan);
        self.keep(&record, None);
    }
}
