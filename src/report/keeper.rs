//! The reporter that keeps the report record ([`super::record`]) and the metrics textfile
//! ([`super::metrics`]) up to date as a cycle runs.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::record::Record;
use super::{Reporter, metrics};
use crate::cycle::{Cycle, State};

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
}

impl Reporter for Keeper {
    fn entered(&self, cycle: &Cycle) {
        let _one_at_a_time = self.lock.lock().expect("record lock");
        let mut record = Record::load(&self.state_dir);
        match &cycle.state {
            State::Downloading { plan, .. } => {
                record.checked(cycle.started_at, plan.updates.clone(), plan.needs_reboot());
                if let Some(releases) = &cycle.releases {
                    record.release = Some(releases.running.clone());
                }
            }
            State::Done { .. } => record.ended(cycle),
            _ => {}
        }
        record.save(&self.state_dir);
        if let Some(path) = &self.textfile {
            metrics::write_textfile(path, &record, Some(cycle));
        }
    }
}
