//! What root may read or run: files and directories no one else can change.
//!
//! ecs-patchd runs as root and reads commands from its configuration, runs hooks and keeps
//! its journal in the state directory. Each of these is trusted only when root (or the user
//! running the command) owns it, no one else may write it, and the same holds for every
//! directory above it, as sshd's `StrictModes` checks a user's files: whoever may write a
//! directory may swap what is below it between the check and the use. Both the directories
//! of the path as written (a symbolic link is only as safe as the directory it sits in) and
//! those of the path its links resolve to are checked. A world-writable directory with the
//! sticky bit (`/tmp`) is accepted above the path, never as the path itself: there only an
//! entry's owner may rename or remove it.
//!
//! A file is opened once, without waiting on a pipe, checked through the opened descriptor
//! (and found to be the very file at the checked path), so what is checked is what is read.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

/// The device a `--config /dev/null` names: nothing anyone could write into it.
const DEV_NULL: &str = "/dev/null";

/// Refuses `path` (described by `meta`) unless root, or the user running the command,
/// owns it and no one else may write it; `why` says what is at stake. A sticky
/// world-writable directory passes when `above` (a directory above the path, where only an
/// entry's owner may rename it).
fn owned_and_closed(path: &Path, meta: &Metadata, why: &str, above: bool) -> Result<(), String> {
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "{} is owned by uid {}, not by root: {why}, so it is refused (chown root {})",
            path.display(),
            meta.uid(),
            path.display()
        ));
    }
    let sticky_dir = above && meta.is_dir() && meta.mode() & 0o1000 != 0;
    if meta.mode() & 0o022 != 0 && !sticky_dir {
        return Err(format!(
            "{} is writable by {} (mode {:o}): {why}, so it is refused (chmod go-w {})",
            path.display(),
            if meta.mode() & 0o002 != 0 { "everyone" } else { "its group" },
            meta.mode() & 0o7777,
            path.display()
        ));
    }
    Ok(())
}

/// The canonical form of `path` (every symbolic link resolved), after checking every
/// directory above it: those of `path` as written and those of its canonical form. `path`
/// itself is not checked.
pub fn parents_checked(path: &Path, why: &str) -> Result<PathBuf, String> {
    let written = std::path::absolute(path).map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    let canonical = std::fs::canonicalize(path).map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    let swap = format!("{why}, and whoever may write a directory above it may swap it");
    for parent in written.ancestors().skip(1).chain(canonical.ancestors().skip(1)) {
        let meta = std::fs::symlink_metadata(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        // A link's own mode means nothing: the directory it sits in (checked too) guards it.
        if !meta.file_type().is_symlink() {
            owned_and_closed(parent, &meta, &swap, true)?;
        }
    }
    Ok(canonical)
}

/// `path` and the directories above it checked; its canonical form.
pub fn path_checked(path: &Path, why: &str) -> Result<(PathBuf, Metadata), String> {
    let canonical = parents_checked(path, why)?;
    let meta = std::fs::symlink_metadata(&canonical).map_err(|e| format!("{}: {e}", canonical.display()))?;
    owned_and_closed(&canonical, &meta, why, false)?;
    Ok((canonical, meta))
}

/// Reads the file `path` for root: opened once without waiting on a pipe, checked through
/// its descriptor (a regular file, root's alone) and its directories
/// ([`parents_checked`]), found to be the file at its canonical path, and read from the
/// descriptor, at most `limit` bytes. `/dev/null` reads as empty.
pub fn read_file(path: &Path, limit: u64, why: &str) -> Result<Vec<u8>, String> {
    let file = OpenOptions::new()
        .read(true)
        // A FIFO opened for reading would wait for a writer; its type is refused below.
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?;
    if is_null_device(&meta) && std::fs::canonicalize(path).is_ok_and(|c| c == Path::new(DEV_NULL)) {
        return Ok(Vec::new());
    }
    if !meta.is_file() {
        return Err(format!(
            "{} is not a regular file (a pipe, a device or a directory): {why}, so it is refused",
            path.display()
        ));
    }
    owned_and_closed(path, &meta, why, false)?;
    let canonical = parents_checked(path, why)?;
    // The path checked names the file opened (not one swapped in since).
    let at_path = std::fs::metadata(&canonical).map_err(|e| format!("{}: {e}", canonical.display()))?;
    if (at_path.dev(), at_path.ino()) != (meta.dev(), meta.ino()) {
        return Err(format!("{} changed while it was read: refused", path.display()));
    }
    read_bounded(file, limit, path)
}

/// Reads at most `limit` bytes of `file`; an error naming `path` if there is more.
pub fn read_bounded(file: File, limit: u64, path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(format!("{} is larger than {limit} bytes: refused", path.display()));
    }
    Ok(bytes)
}

/// Refuses `dir` unless it is a private directory: a directory (not a link), owned by root
/// or the user running the command, that no one else may read or write, under parents no
/// one else may write.
pub fn private_dir(dir: &Path, why: &str) -> Result<(), String> {
    parents_checked(dir, why)?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory (a symbolic link?): {why}, so it is refused", dir.display()));
    }
    owned_and_closed(dir, &meta, why, false)?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} may be read by others (mode {:o}): {why}, so it is refused (chmod 700 {})",
            dir.display(),
            meta.mode() & 0o7777,
            dir.display()
        ));
    }
    Ok(())
}

/// Linux's null device, character device 1:3 (not merely a file at its path).
fn is_null_device(meta: &Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_char_device() && meta.rdev() == nix::sys::stat::makedev(1, 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_file_under_a_directory_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        let file = open.join("config.toml");
        std::fs::write(&file, "x = 1\n").unwrap();
        chmod(&file, 0o644);
        chmod(&open, 0o777);
        let err = read_file(&file, 1024, "it names commands").unwrap_err();
        assert!(err.contains("open is writable by everyone") && err.contains("swap"), "{err}");
        // Sticky, as /tmp is: only an entry's owner may rename it.
        chmod(&open, 0o1777);
        assert_eq!(read_file(&file, 1024, "it names commands").unwrap(), b"x = 1\n");
        chmod(&open, 0o775);
        assert!(read_file(&file, 1024, "why").unwrap_err().contains("writable by its group"));
    }

    #[test]
    fn a_sticky_directory_is_no_hook_folder_and_a_link_in_an_open_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sticky = dir.path().join("sticky");
        std::fs::create_dir(&sticky).unwrap();
        chmod(&sticky, 0o1777);
        assert!(path_checked(&sticky, "hooks run").unwrap_err().contains("writable by everyone"));
        // A link to a safe file, in a directory anyone may write: the link can be re-pointed.
        let safe = dir.path().join("safe.toml");
        std::fs::write(&safe, "x = 1\n").unwrap();
        chmod(&safe, 0o644);
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::os::unix::fs::symlink(&safe, open.join("config.toml")).unwrap();
        chmod(&open, 0o777);
        let err = read_file(&open.join("config.toml"), 1024, "why").unwrap_err();
        assert!(err.contains("open is writable by everyone"), "{err}");
    }

    #[test]
    fn a_file_of_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "x = 1\n").unwrap();
        chmod(&file, 0o644);
        if std::os::unix::fs::chown(&file, Some(65534), None).is_err() {
            return; // not root: cannot give a file away; the CI runs as root
        }
        let err = read_file(&file, 1024, "it names commands").unwrap_err();
        assert!(err.contains("owned by uid 65534"), "{err}");
    }

    #[test]
    fn pipes_links_and_big_files_are_refused_and_dev_null_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read_file(&fifo, 1024, "why").unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 2048]).unwrap();
        assert!(read_file(&big, 1024, "why").unwrap_err().contains("larger than 1024 bytes"));
        assert_eq!(read_file(Path::new("/dev/null"), 1024, "why").unwrap(), b"");
        // A link is resolved and its target checked, parents and all.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&big, &link).unwrap();
        assert!(read_file(&link, 4096, "why").is_ok());
    }

    #[test]
    fn a_private_dir_is_accepted_and_an_open_one_or_a_link_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/state");
        crate::atomic_file::create_private_dir(&state).unwrap();
        private_dir(&state, "it holds the journal").unwrap();
        assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
        chmod(&state, 0o755);
        let err = private_dir(&state, "it holds the journal").unwrap_err();
        assert!(err.contains("mode 755") && err.contains("chmod 700"), "{err}");
        let link = dir.path().join("link");
        chmod(&state, 0o700);
        std::os::unix::fs::symlink(&state, &link).unwrap();
        assert!(private_dir(&link, "why").unwrap_err().contains("not a directory"));
    }
}
