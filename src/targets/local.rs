//! Reading and replacing local files for the `file` and `dotenv` targets.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TargetError;
use crate::fsutil;
use crate::secret::SecretBytes;

/// What a local file looked like at preflight. Public: journaled in clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// The file written: the playbook's path with symbolic links resolved,
    /// so that a link keeps pointing at the file it pointed at.
    pub real_path: PathBuf,
    pub exists: bool,
    /// Permission bits of the existing file, or those a new file gets.
    pub mode: u32,
    /// Owner of the existing file, kept on replace.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl FileState {
    pub fn summary(&self) -> String {
        if self.exists {
            format!("exists, mode {:04o}", self.mode)
        } else {
            format!("will be created with mode {:04o}", self.mode)
        }
    }
}

/// Inspects `path` without changing it. Returns the state and the current
/// content (empty when the file does not exist).
pub fn inspect(
    path: &Path,
    create: bool,
    new_mode: u32,
) -> Result<(FileState, SecretBytes), TargetError> {
    let shown = path.display();
    let real_path = match fs::canonicalize(path) {
        Ok(real) => real,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            if !create {
                return Err(TargetError::Misconfigured(format!(
                    "file {shown} does not exist; create it, or set `create: true` to let keywheel create it"
                )));
            }
            // With `create: true` missing directories are created at push
            // time; the nearest existing one must be writable now.
            let mut existing = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            while !existing.is_dir() {
                match existing.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
                    _ => {
                        existing = Path::new(".");
                        break;
                    }
                }
            }
            check_writable_dir(existing, path)?;
            let state = FileState {
                real_path: path.to_path_buf(),
                exists: false,
                mode: new_mode,
                uid: None,
                gid: None,
            };
            return Ok((state, SecretBytes::default()));
        }
        Err(err) => return Err(io_error("cannot resolve", path, err)),
    };
    let metadata = fs::metadata(&real_path).map_err(|err| io_error("cannot read", path, err))?;
    if !metadata.is_file() {
        return Err(TargetError::Misconfigured(format!(
            "{shown} is not a regular file"
        )));
    }
    let content = fs::read(&real_path).map_err(|err| io_error("cannot read", path, err))?;
    let content = SecretBytes::new(content);
    let parent = real_path.parent().unwrap_or(Path::new("/"));
    check_writable_dir(parent, path)?;
    let state = FileState {
        real_path,
        exists: true,
        mode: metadata.mode() & 0o7777,
        uid: Some(metadata.uid()),
        gid: Some(metadata.gid()),
    };
    Ok((state, content))
}

/// Reads the file's current content; `None` when it does not exist.
pub fn read_current(state: &FileState) -> Result<Option<SecretBytes>, TargetError> {
    match fs::read(&state.real_path) {
        Ok(content) => Ok(Some(SecretBytes::new(content))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_error("cannot read", &state.real_path, err)),
    }
}

/// Replaces the file with `content`, keeping the mode and owner seen at
/// preflight, then reads it back.
pub fn replace(state: &FileState, content: &[u8]) -> Result<(), TargetError> {
    let path = &state.real_path;
    if !state.exists
        && let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty())
    {
        fsutil::create_private_dir(dir)
            .map_err(|err| io_error("cannot create directory for", path, err))?;
    }
    fsutil::write_atomic_owned(path, content, state.mode, owner(state))
        .map_err(|err| io_error("cannot write", path, err))?;
    let back = fs::read(path).map_err(|err| io_error("cannot read back", path, err))?;
    let back = SecretBytes::new(back);
    if back.expose() != content {
        return Err(TargetError::ReadBackMismatch(format!(
            "{} does not hold the bytes just written",
            path.display()
        )));
    }
    Ok(())
}

/// Removes a file that keywheel created.
pub fn remove(state: &FileState) -> Result<(), TargetError> {
    fsutil::remove_durably(&state.real_path)
        .map_err(|err| io_error("cannot remove", &state.real_path, err))
}

fn owner(state: &FileState) -> Option<(u32, u32)> {
    match (state.uid, state.gid) {
        (Some(uid), Some(gid)) => Some((uid, gid)),
        _ => None,
    }
}

fn check_writable_dir(dir: &Path, file: &Path) -> Result<(), TargetError> {
    match rustix::fs::access(dir, rustix::fs::Access::WRITE_OK) {
        Ok(()) => Ok(()),
        Err(_) => Err(TargetError::Denied(format!(
            "cannot replace {}: directory {} is not writable (keywheel writes a temporary file there and renames it)",
            file.display(),
            dir.display()
        ))),
    }
}

pub fn io_error(action: &str, path: &Path, err: io::Error) -> TargetError {
    let message = format!("{action} {}: {err}", path.display());
    match err.kind() {
        io::ErrorKind::PermissionDenied => TargetError::Denied(message),
        _ => TargetError::Unavailable(message),
    }
}

/// Returns the summary of a restore that found the file at `path` deleted
/// after the push and did not recreate it.
pub(super) fn deleted_after_push(path: &std::path::Path) -> String {
    format!(
        "left alone: {} was deleted after the push; keywheel did not recreate it, so restore it by hand if the application needs it",
        path.display()
    )
}

/// Returns a hint for a file that starts with a UTF-8 byte order mark,
/// which the file and dotenv targets read as part of the first line. For
/// any other file it returns an empty string.
pub(super) fn bom_hint(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\xef\xbb\xbf") {
        "; the file starts with a UTF-8 byte order mark, which keywheel does not skip: remove it"
    } else {
        ""
    }
}
