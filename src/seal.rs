//! Sealing of secret values for the journal.
//!
//! Secrets that a run must remember across a crash (the new key, the values a
//! target held before the push) are encrypted with XChaCha20-Poly1305 under a
//! 32-byte seal key that the operator controls. The associated data binds each
//! ciphertext to its run and purpose, so a sealed value cannot be moved to
//! another record unnoticed.
//!
//! The seal key comes from, in order: the `KEYWHEEL_SEAL_KEY` environment
//! variable (64 hex digits or base64 of 32 bytes), an explicit key file, or
//! `seal.key` in the state directory, created on first use with mode 0600. A
//! key file that group or others can access is rejected.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::fsutil;
use crate::secret::SecretBytes;

/// Environment variable that holds the seal key itself.
pub const SEAL_KEY_ENV: &str = "KEYWHEEL_SEAL_KEY";
/// File name of the default seal key inside the state directory.
pub const DEFAULT_KEY_FILE: &str = "seal.key";

const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "invalid seal key in {SEAL_KEY_ENV}: expected 64 hex digits or base64 of 32 bytes; \
         generate one with `head -c 32 /dev/urandom | base64`"
    )]
    InvalidEnvKey,
    #[error(
        "seal key file {path} is readable by group or others (mode {mode:o}); \
         run `chmod 600 {path}`"
    )]
    KeyFileShared { path: PathBuf, mode: u32 },
    #[error("cannot read seal key file {path}: {source}")]
    KeyFileUnreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("seal key file {path} is invalid: expected 32 bytes, 64 hex digits or base64")]
    KeyFileInvalid { path: PathBuf },
    #[error("cannot read seal key file {path}: it is {kind}, not a regular file")]
    KeyFileNotFile { path: PathBuf, kind: &'static str },
    #[error("cannot create seal key file {path}: {source}")]
    KeyFileCreate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "value sealed with seal key {sealed_with} cannot be opened with the current key {current}; \
         set {SEAL_KEY_ENV} or the seal key file to the key this run was started with"
    )]
    WrongKey {
        sealed_with: String,
        current: String,
    },
    #[error("sealed value for {purpose} failed authentication: the journal was altered or damaged")]
    Tampered { purpose: String },
    #[error("sealed value for {purpose} is malformed")]
    Malformed { purpose: String },
}

/// A sealed value as stored in a journal record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Fingerprint of the seal key, so a wrong key gets a clear error.
    pub key_id: String,
    /// Base64 of the 24-byte nonce.
    pub nonce: String,
    /// Base64 of ciphertext and tag.
    pub ciphertext: String,
}

/// Encrypts and decrypts journal secrets with one seal key.
#[derive(Clone)]
pub struct Sealer {
    key: Zeroizing<[u8; KEY_LEN]>,
    key_id: String,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// Where a seal key was loaded from, for messages.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A throwaway key for commands that never open a sealed value.
    Ephemeral,
    Environment,
    File(PathBuf),
    Created(PathBuf),
}

impl Sealer {
    /// Builds a sealer from raw key bytes.
    pub fn from_key(key: [u8; KEY_LEN]) -> Self {
        let mut digest = Sha256::new();
        digest.update(b"keywheel seal key id\0");
        digest.update(key);
        let key_id = hex::encode(&digest.finalize()[..8]);
        Self {
            key: Zeroizing::new(key),
            key_id,
        }
    }

    /// Loads the seal key from the environment, `key_file`, or the default
    /// file in `state_dir` (created when missing).
    pub fn load(key_file: Option<&Path>, state_dir: &Path) -> Result<(Self, KeySource), SealError> {
        if let Some(value) = std::env::var_os(SEAL_KEY_ENV) {
            let text = Zeroizing::new(value.into_string().map_err(|_| SealError::InvalidEnvKey)?);
            let key = parse_key_text(text.trim()).ok_or(SealError::InvalidEnvKey)?;
            return Ok((Self::from_key(key), KeySource::Environment));
        }
        if let Some(path) = key_file {
            let key = read_key_file(path)?;
            return Ok((Self::from_key(key), KeySource::File(path.to_path_buf())));
        }
        let path = state_dir.join(DEFAULT_KEY_FILE);
        if path.exists() {
            let key = read_key_file(&path)?;
            return Ok((Self::from_key(key), KeySource::File(path)));
        }
        let key = create_key_file(&path)?;
        Ok((Self::from_key(key), KeySource::Created(path)))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new_from_slice(self.key.as_ref())
            .expect("seal keys are always 32 bytes, the XChaCha20-Poly1305 key size")
    }

    /// Loads the seal key like [`Sealer::load`], but returns `None` instead
    /// of creating the default key file when no key exists.
    pub fn load_existing(
        key_file: Option<&Path>,
        state_dir: &Path,
    ) -> Result<Option<(Self, KeySource)>, SealError> {
        let exists = std::env::var_os(SEAL_KEY_ENV).is_some()
            || key_file.is_some()
            || state_dir.join(DEFAULT_KEY_FILE).exists();
        if !exists {
            return Ok(None);
        }
        Self::load(key_file, state_dir).map(Some)
    }

    /// A sealer with a random key kept nowhere, for commands that only read
    /// public records and never open a sealed value.
    pub fn ephemeral() -> Self {
        let mut key = [0u8; KEY_LEN];
        // Nothing sealed with this key is ever kept, so a failing random
        // source only makes the key predictable, not a secret exposed.
        let _ = crate::secret::os_random(&mut key);
        Self::from_key(key)
    }

    /// Fingerprint of the key: safe to show and to store.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals `plaintext`, binding it to `purpose` (for example
    /// `"<run id>/key"`).
    pub fn seal(&self, purpose: &str, plaintext: &SecretBytes) -> Sealed {
        let cipher = self.cipher();
        let nonce = XNonce::generate();
        let payload = Payload {
            msg: plaintext.expose(),
            aad: purpose.as_bytes(),
        };
        // Encryption only fails for messages longer than the cipher's limit
        // (about 256 GiB), far beyond any secret keywheel handles.
        let ciphertext = cipher.encrypt(&nonce, payload).unwrap_or_default();
        let engine = base64::engine::general_purpose::STANDARD;
        Sealed {
            key_id: self.key_id.clone(),
            nonce: engine.encode(nonce.as_slice()),
            ciphertext: engine.encode(ciphertext),
        }
    }

    /// Opens a value sealed with [`Sealer::seal`] under the same `purpose`.
    pub fn open(&self, purpose: &str, sealed: &Sealed) -> Result<SecretBytes, SealError> {
        if sealed.key_id != self.key_id {
            return Err(SealError::WrongKey {
                sealed_with: sealed.key_id.clone(),
                current: self.key_id.clone(),
            });
        }
        let engine = base64::engine::general_purpose::STANDARD;
        let malformed = || SealError::Malformed {
            purpose: purpose.to_string(),
        };
        let nonce_bytes = engine.decode(&sealed.nonce).map_err(|_| malformed())?;
        let nonce = XNonce::try_from(nonce_bytes.as_slice()).map_err(|_| malformed())?;
        let ciphertext = engine.decode(&sealed.ciphertext).map_err(|_| malformed())?;
        let cipher = self.cipher();
        let payload = Payload {
            msg: &ciphertext,
            aad: purpose.as_bytes(),
        };
        cipher
            .decrypt(&nonce, payload)
            .map(SecretBytes::new)
            .map_err(|_| SealError::Tampered {
                purpose: purpose.to_string(),
            })
    }
}

fn parse_key_text(text: &str) -> Option<[u8; KEY_LEN]> {
    let bytes = Zeroizing::new(if text.len() == 2 * KEY_LEN {
        hex::decode(text).ok()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?
    });
    bytes.as_slice().try_into().ok()
}

fn read_key_file(path: &Path) -> Result<[u8; KEY_LEN], SealError> {
    let unreadable = |source| SealError::KeyFileUnreadable {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    if !metadata.is_file() {
        let kind = if metadata.is_dir() {
            "a directory"
        } else {
            "a device, socket or pipe"
        };
        return Err(SealError::KeyFileNotFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o7777;
    if fsutil::is_shared_mode(mode) {
        return Err(SealError::KeyFileShared {
            path: path.to_path_buf(),
            mode,
        });
    }
    let bytes = Zeroizing::new(fs::read(path).map_err(unreadable)?);
    if let Ok(raw) = <[u8; KEY_LEN]>::try_from(bytes.as_slice()) {
        return Ok(raw);
    }
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| parse_key_text(text.trim()))
        .ok_or_else(|| SealError::KeyFileInvalid {
            path: path.to_path_buf(),
        })
}

fn create_key_file(path: &Path) -> Result<[u8; KEY_LEN], SealError> {
    let create_error = |source| SealError::KeyFileCreate {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fsutil::create_private_dir(dir).map_err(create_error)?;
    }
    let mut key = [0u8; KEY_LEN];
    crate::secret::os_random(&mut key)
        .map_err(|message| create_error(io::Error::other(message)))?;
    let text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key) + "\n");
    // The file appears by link(2) from a complete temporary file, which
    // fails when it exists: of two first runs racing here, the second reads
    // the key the first created instead of replacing it.
    let unique: u64 = rand::random();
    let temp = path.with_extension(format!("key.{}-{unique:016x}.tmp", std::process::id()));
    fsutil::write_atomic(&temp, text.as_bytes(), fsutil::PRIVATE_FILE_MODE)
        .map_err(create_error)?;
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                fsutil::sync_dir(dir).map_err(create_error)?;
            }
            Ok(key)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => read_key_file(path),
        Err(err) => Err(create_error(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_with_same_purpose() {
        let sealer = Sealer::from_key([7; 32]);
        let secret = SecretBytes::from_text("value");
        let sealed = sealer.seal("run/key", &secret);
        assert!(!sealed.ciphertext.contains("value"));
        assert_eq!(sealer.open("run/key", &sealed).unwrap(), secret);
    }

    #[test]
    fn open_rejects_other_purpose() {
        let sealer = Sealer::from_key([7; 32]);
        let sealed = sealer.seal("run-a/key", &SecretBytes::from_text("v"));
        let err = sealer.open("run-b/key", &sealed).unwrap_err();
        assert!(matches!(err, SealError::Tampered { .. }));
    }

    #[test]
    fn open_names_wrong_key() {
        let sealed = Sealer::from_key([1; 32]).seal("p", &SecretBytes::from_text("v"));
        let err = Sealer::from_key([2; 32]).open("p", &sealed).unwrap_err();
        assert!(matches!(err, SealError::WrongKey { .. }));
    }

    #[test]
    fn default_key_file_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_KEY_FILE);
        let key = create_key_file(&path).unwrap();
        assert_eq!(fsutil::mode_of(&path).unwrap(), 0o600);
        assert_eq!(read_key_file(&path).unwrap(), key);
    }

    #[test]
    fn racing_creators_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_KEY_FILE);
        let keys: Vec<[u8; KEY_LEN]> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| create_key_file(&path).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let on_disk = read_key_file(&path).unwrap();
        assert!(keys.iter().all(|key| *key == on_disk));
    }

    #[test]
    fn shared_key_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fsutil::write_atomic(&path, &[3; 32], 0o644).unwrap();
        let err = read_key_file(&path).unwrap_err();
        assert!(matches!(err, SealError::KeyFileShared { .. }));
    }
}
