//! The durable record of the cycle in progress, and the lock that keeps it single.
//!
//! The record is one JSON file in the state directory, replaced atomically: written to a
//! temporary file, fsynced, renamed over the old one, and the directory fsynced, so a crash
//! leaves either the old or the new record, never a torn one. Mode 0600, directory 0700.
//! A corrupt record is reported and never overwritten.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic_file;
use crate::error::{Error, Result};
use crate::trust;

const RECORD_FILE: &str = "cycle.json";
const LOCK_FILE: &str = "lock";
/// The largest state file read (a journal is a few kilobytes; a plan of thousands of
/// packages a few hundred).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Exclusive access to the state directory's record, held until dropped.
pub struct Journal {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Journal {
    /// Creates the state directory if needed and takes its lock without waiting.
    ///
    /// Fails with [`Error::Busy`] naming the holder's pid when another process has it.
    pub fn open(dir: &Path) -> Result<Self> {
        atomic_file::create_private_dir(dir).map_err(|e| journal_error("cannot create the state directory", dir, e))?;
        trust::private_dir(dir, "it holds the cycle's journal and lock")
            .map_err(|why| Error::Config(format!("key `paths.state_dir`: {why}")))?;
        let lock_path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // A link planted in its place would have the pid written through it.
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(&lock_path)
            .map_err(|e| journal_error("cannot open the lock file", &lock_path, e))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                // The holder writes its pid just after taking the lock: it may not be there yet.
                let mut holder = String::new();
                let _ = file.take(32).read_to_string(&mut holder);
                let who = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!("another ecs-patchd (pid {pid})"),
                    Err(_) => "another ecs-patchd".to_string(),
                };
                return Err(Error::Busy(format!("{who} is running a cycle in {}", dir.display())));
            }
            Err((_, errno)) => {
                return Err(journal_error("cannot lock", &lock_path, errno.into()));
            }
        };
        lock.set_len(0)
            .and_then(|_| write!(*lock, "{}", std::process::id()))
            .map_err(|e| journal_error("cannot write the lock file", &lock_path, e))?;
        Ok(Self { dir: dir.to_path_buf(), _lock: lock })
    }

    /// The state directory it keeps.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the record; `None` when there is none yet.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        read(&self.dir)
    }

    /// Replaces the record atomically and durably.
    pub fn save<T: Serialize>(&self, record: &T) -> Result<()> {
        self.save_file(RECORD_FILE, record)
    }

    /// Moves the record aside (to `cycle.json.<suffix>`, kept for an operator), so that the
    /// next cycle starts afresh; returns where it went.
    pub fn set_aside(&self, suffix: &str) -> Result<PathBuf> {
        let from = self.dir.join(RECORD_FILE);
        let to = self.dir.join(format!("{RECORD_FILE}.{suffix}"));
        std::fs::rename(&from, &to).map_err(|e| journal_error("cannot move aside", &from, e))?;
        Ok(to)
    }

    /// Replaces the state directory's file `name` with `record`, atomically and durably.
    pub fn save_file<T: Serialize>(&self, name: &str, record: &T) -> Result<()> {
        let path = self.dir.join(name);
        let mut bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::Journal(format!("cannot encode {}: {e}", path.display())))?;
        bytes.push(b'\n');
        atomic_file::replace(&path, &bytes, 0o600).map_err(|e| journal_error("cannot replace", &path, e))
    }
}

/// Reads the record of `dir` without taking the lock (for `status` and diagnostics).
pub fn read<T: DeserializeOwned>(dir: &Path) -> Result<Option<T>> {
    read_file(dir, RECORD_FILE).map_err(|e| match e {
        Error::Journal(corrupt) if corrupt.contains(" is corrupt ") => Error::Journal(format!(
            "the cycle record {corrupt}. It was left untouched. Move the file aside: the next run takes up \
             a drain of this host's from the mark on its container instance and returns it to service."
        )),
        other => other,
    })
}

/// Reads the state directory's file `name`; `None` when there is none yet.
pub fn read_file<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>> {
    let path = dir.join(name);
    match read_bytes(&path, MAX_FILE_BYTES)? {
        Some(bytes) => parse(&bytes, &path).map(Some),
        None => Ok(None),
    }
}

/// The bytes of the state file `path`, opened without following a link and read up to
/// `limit`; `None` when there is none.
pub fn read_bytes(path: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    let file = match OpenOptions::new().read(true).custom_flags(OFlag::O_NOFOLLOW.bits()).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(journal_error("cannot read", path, e)),
    };
    trust::read_bounded(file, limit, path).map(Some).map_err(Error::Journal)
}

/// A record read from `path`; a clear error (never a panic) when it is not one.
pub fn parse<T: DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Journal(format!("{} is corrupt ({e})", path.display())))
}

fn journal_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Journal(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Record {
        step: String,
    }

    #[test]
    fn saves_and_loads_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let journal = Journal::open(&state).unwrap();
        assert_eq!(journal.load::<Record>().unwrap(), None);
        journal.save(&Record { step: "draining".into() }).unwrap();
        assert_eq!(journal.load::<Record>().unwrap(), Some(Record { step: "draining".into() }));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(RECORD_FILE)), 0o600);
        assert!(!state.join("cycle.json.tmp").exists());
    }

    #[test]
    fn second_open_is_busy_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _first = Journal::open(&state).unwrap();
        match Journal::open(&state) {
            Err(Error::Busy(message)) => {
                assert!(message.contains(&std::process::id().to_string()), "{message}")
            }
            other => panic!("expected Busy, got {:?}", other.err()),
        }
    }

    #[test]
    fn lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        drop(Journal::open(&state).unwrap());
        assert!(Journal::open(&state).is_ok());
    }

    #[test]
    fn a_linked_lock_and_an_open_state_dir_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        std::os::unix::fs::symlink(&victim, state.join(LOCK_FILE)).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = Journal::open(&state).err().expect("a linked lock is refused");
        assert!(err.to_string().contains("cannot open the lock file"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        match Journal::open(&state) {
            Err(Error::Config(why)) => assert!(why.contains("paths.state_dir") && why.contains("chmod 700"), "{why}"),
            other => panic!("expected a configuration error, got {:?}", other.err()),
        }
    }

    #[test]
    fn corrupt_record_is_reported_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let journal = Journal::open(&state).unwrap();
        let path = state.join(RECORD_FILE);
        std::fs::write(&path, "{\"step\": \"drain").unwrap();
        match journal.load::<Record>() {
            Err(Error::Journal(message)) => assert!(message.contains("corrupt"), "{message}"),
            other => panic!("expected a journal error, got {other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"step\": \"drain");
    }
}
