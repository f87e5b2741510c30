//! Files replaced whole, atomically and durably: the journal, the report record, the
//! metrics textfile and the daemon's status file all go through [`replace`], so that a
//! crash or a reader at any moment sees the old content or the new, never a part.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Creates the directory `dir` (mode 0700: root's alone, as the state directory is) if it
/// is missing.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Replaces `path` with `bytes`, atomically (a temporary file beside it, renamed over it:
/// readers see the old content or the new, never a part) and durably, with `mode`.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // A hidden name: node_exporter reads only `*.prom`, other readers only the final name.
    let mut temp = tempfile::Builder::new()
        .prefix(".ecs-patchd-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}
