//! File-system helpers with the durability and permission rules keywheel needs.
//!
//! An atomic replace writes a temporary file in the destination's directory,
//! syncs it, renames it over the destination and syncs the directory, so a
//! crash leaves either the old file or the new one, never a mix. Files that
//! may hold secrets are created with mode 0600.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode for files that may hold secrets.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode for directories that hold such files.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Replaces `path` with `contents` atomically and durably.
///
/// The new file gets `mode`; the caller passes the existing file's mode to
/// keep it, or [`PRIVATE_FILE_MODE`] for a new file. Ownership is not
/// changed: a file owned by another user ends up owned by the caller.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_owned(path, contents, mode, None)
}

/// Like [`write_atomic`], and gives the new file `owner` (uid, gid) when it is
/// not the current user, so that a file replaced by root stays readable by
/// the service that owns it.
pub fn write_atomic_owned(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let dir = parent_dir(path);
    remove_stale_temps(path);
    let temp = temp_path(path);
    let result = (|| {
        // Private until the contents are complete: a temporary file left by
        // a kill -9 contains the new secret and must not be readable by others.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&temp)?;
        if let Some((uid, gid)) = owner {
            let current = rustix::process::geteuid().as_raw();
            let group = rustix::process::getegid().as_raw();
            if uid != current || gid != group {
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
            }
        }
        file.write_all(contents)?;
        // Set the mode exactly, since the umask may have removed bits.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        crate::timings::OTHER_SYNCS.time(|| file.sync_all())?;
        drop(file);
        fs::rename(&temp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Removes `path` durably. A file that is already gone is not an error.
pub fn remove_durably(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(&parent_dir(path)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// Syncs a directory so that renames and creations in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = File::open(dir)?;
    crate::timings::OTHER_SYNCS.time(|| dir.sync_all())
}

/// Creates `dir` and its parents with mode 0700 where they are missing.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
}

/// Returns the permission bits of `path`.
pub fn mode_of(path: &Path) -> io::Result<u32> {
    Ok(fs::metadata(path)?.mode() & 0o7777)
}

/// Whether group or others may read, write or execute a file with `mode`.
pub fn is_shared_mode(mode: u32) -> bool {
    mode & 0o077 != 0
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Age after which a temporary file of an atomic replace counts as left
/// over from a killed process. A replace takes well under a second.
const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes temporary files of earlier replaces of `path` that a killed
/// process left behind. Errors are ignored: this is only tidying.
fn remove_stale_temps(path: &Path) {
    let Some(name) = path.file_name() else {
        return;
    };
    let prefix = format!(".{}.keywheel-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(parent_dir(path)) else {
        return;
    };
    for entry in entries.flatten() {
        let entry_name = entry.file_name();
        let entry_name = entry_name.to_string_lossy();
        if !entry_name.starts_with(&prefix) || !entry_name.ends_with(".tmp") {
            continue;
        }
        let stale = entry
            .metadata()
            .and_then(|metadata| metadata.modified())
            .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age > STALE_TEMP_AGE));
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix: u64 = rand::random();
    parent_dir(path).join(format!(".{name}.keywheel-{suffix:016x}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_sets_exact_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_atomic(&path, b"one", 0o600).unwrap();
        assert_eq!(mode_of(&path).unwrap(), 0o600);
        write_atomic(&path, b"two", 0o640).unwrap();
        assert_eq!(mode_of(&path).unwrap(), 0o640);
        assert_eq!(fs::read(&path).unwrap(), b"two");
    }

    #[test]
    fn write_atomic_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"x", 0o600).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn write_atomic_removes_stale_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.env");
        let stale = dir.path().join(".app.env.keywheel-00000000000000aa.tmp");
        let fresh = dir.path().join(".app.env.keywheel-00000000000000bb.tmp");
        let other = dir.path().join(".other.env.keywheel-00000000000000cc.tmp");
        for temp in [&stale, &fresh, &other] {
            fs::write(temp, b"left by a killed run").unwrap();
        }
        let long_ago = std::time::SystemTime::now() - 2 * STALE_TEMP_AGE;
        for temp in [&stale, &other] {
            File::options()
                .write(true)
                .open(temp)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }

        write_atomic(&path, b"x", 0o644).unwrap();

        assert!(!stale.exists(), "stale temp file kept");
        assert!(fresh.exists(), "a temp file of a running replace removed");
        assert!(other.exists(), "a temp file of another file removed");
    }
}
