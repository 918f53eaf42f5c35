//! The `vault` target: fields of a KV version 2 secret in HashiCorp Vault or
//! OpenBao.
//!
//! ```yaml
//! - name: vault-app
//!   type: vault
//!   mount: secret            # the KV v2 mount
//!   path: demo/app           # the secret inside the mount
//!   set:
//!     api_key: secret        # field in the secret <- key field
//!   address_env: VAULT_ADDR  # default; the variable holding the address
//!   token_env: VAULT_TOKEN   # default; tokens are never written inline
//! ```
//!
//! Other fields of the secret are kept. Every write carries check-and-set
//! (`cas`) on the version seen at preflight, so a concurrent writer makes the
//! push fail instead of being overwritten, and the written version is read
//! back and compared. Preflight checks that the mount is KV version 2.

mod client;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Receipt, Snapshot, Target, TargetCx, TargetError, mapped_values};
use crate::key::Key;
use crate::playbook::decode::{Cx, MapReader};
use crate::playbook::decode_field_map;
use crate::secret::SecretBytes;
pub use client::split_path;
use client::{KvClient, KvError, SecretData};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_ADDRESS_ENV: &str = "VAULT_ADDR";
const DEFAULT_TOKEN_ENV: &str = "VAULT_TOKEN";
/// Fields that would hold a secret or an address inline, each with the
/// field that names its environment variable instead.
const INLINE_FIELDS: [(&str, &str); 2] = [("token", "token_env"), ("address", "address_env")];

#[derive(Clone, Debug)]
pub struct VaultSpec {
    pub address_env: String,
    pub token_env: String,
    pub namespace: Option<String>,
    pub mount: String,
    pub path: String,
    /// Field in the secret to key field.
    pub set: BTreeMap<String, String>,
    /// Create the secret, or add fields that are missing from it.
    pub create: bool,
    /// PEM file of the CA that signed the server's certificate.
    pub ca_cert: Option<PathBuf>,
    /// Timeout of each HTTP request.
    pub timeout: Duration,
}

impl VaultSpec {
    pub fn decode(reader: &mut MapReader<'_>, cx: &mut Cx) -> Self {
        let mount: String = reader.required("mount", cx);
        if let Some(node) = reader.value("mount")
            && let Err(message) = split_path(&mount)
        {
            cx.error(node, &reader.path_of("mount"), message);
        }
        let path: String = reader.required("path", cx);
        if let Some(node) = reader.value("path")
            && let Err(message) = split_path(&path)
        {
            cx.error(node, &reader.path_of("path"), message);
        }
        let set = match reader.value("set") {
            Some(node) => decode_field_map(node, &reader.path_of("set"), cx),
            None => {
                cx.error_hint(
                    reader.node(),
                    reader.path(),
                    "missing required field `set`",
                    "map secret fields to key fields, for example `set: {api_key: secret}`",
                );
                BTreeMap::new()
            }
        };
        for (field, env_field) in INLINE_FIELDS {
            if let Some(node) = reader.value(field) {
                cx.error_hint(
                    node,
                    &reader.path_of(field),
                    format!("`{field}` cannot be written in a playbook"),
                    format!(
                        "put it in an environment variable and name that variable in `{env_field}`"
                    ),
                );
            }
        }
        Self {
            address_env: reader
                .optional("address_env", cx)
                .unwrap_or_else(|| DEFAULT_ADDRESS_ENV.into()),
            token_env: reader
                .optional("token_env", cx)
                .unwrap_or_else(|| DEFAULT_TOKEN_ENV.into()),
            namespace: reader.optional("namespace", cx),
            mount,
            path,
            set,
            create: reader.optional("create", cx).unwrap_or(false),
            ca_cert: reader
                .optional::<String>("ca_cert", cx)
                .map(|p| cx.resolve_path(&p)),
            timeout: reader.optional("timeout", cx).unwrap_or(DEFAULT_TIMEOUT),
        }
    }

    /// Returns the schema of a `vault` target.
    pub fn schema() -> serde_json::Value {
        use crate::playbook::schema::{
            boolean, duration, env_name, field_map, rejected, string, text,
        };
        let mut properties = vec![
            ("mount", text("The KV version 2 mount, such as secret.")),
            (
                "path",
                text("The secret inside the mount, such as app/api."),
            ),
            (
                "set",
                field_map(
                    "Field in the secret to key field; other fields are kept.",
                    None,
                ),
            ),
            (
                "create",
                boolean(
                    "Create the secret, or add missing fields, instead of failing at preflight.",
                    false,
                ),
            ),
            (
                "address_env",
                env_name(
                    "Environment variable holding the server address.",
                    Some(DEFAULT_ADDRESS_ENV),
                ),
            ),
            (
                "token_env",
                env_name(
                    "Environment variable holding the token.",
                    Some(DEFAULT_TOKEN_ENV),
                ),
            ),
            (
                "namespace",
                string("Vault Enterprise namespace (default: $VAULT_NAMESPACE)."),
            ),
            (
                "ca_cert",
                text(
                    "PEM file of the CA that signed the server's certificate, relative to \
                     the playbook (default: $VAULT_CACERT).",
                ),
            ),
            (
                "timeout",
                duration("Timeout of each request.", Some(DEFAULT_TIMEOUT)),
            ),
        ];
        for (field, env_field) in INLINE_FIELDS {
            let description =
                format!("Never written in a playbook: name the variable in `{env_field}`.");
            properties.push((field, rejected(&description)));
        }
        super::kind_schema(
            "vault",
            "Fields of a KV version 2 secret in OpenBao or HashiCorp Vault, written with \
             check-and-set.",
            properties,
            &["mount", "path", "set"],
        )
    }
}

/// What preflight saw. Public: journaled in clear.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct VaultState {
    existed: bool,
    /// Current version at preflight; 0 when the secret did not exist.
    version: u64,
    /// Whether that version was soft-deleted or destroyed.
    deleted: bool,
    /// Managed fields the secret did not have.
    missing_fields: Vec<String>,
}

pub struct VaultTarget {
    name: String,
    spec: VaultSpec,
    client: KvClient,
    mount: Vec<String>,
    path: Vec<String>,
}

impl VaultTarget {
    /// Builds the target from its spec and the environment. Errors name the
    /// spec field concerned.
    pub fn new(
        name: &str,
        spec: VaultSpec,
        shared: &crate::targets::shared::SharedClients,
    ) -> Result<Self, (&'static str, String)> {
        let address_text = std::env::var(&spec.address_env).map_err(|_| {
            ("address_env", format!(
                "environment variable {} is not set; export the Vault address in it (for example http://127.0.0.1:8200) or name another variable in address_env",
                spec.address_env
            ))
        })?;
        let address = url::Url::parse(address_text.trim())
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .ok_or_else(|| {
                (
                    "address_env",
                    format!(
                        "{} holds {address_text:?}, which is not an http:// or https:// URL",
                        spec.address_env
                    ),
                )
            })?;
        let token = std::env::var(&spec.token_env)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| ("token_env", format!(
                "environment variable {} is not set or empty; export a Vault token in it or name another variable in token_env",
                spec.token_env
            )))?;
        let token = SecretBytes::from_text(token.trim());
        let namespace = spec
            .namespace
            .clone()
            .or_else(|| std::env::var("VAULT_NAMESPACE").ok());
        let ca_path = spec
            .ca_cert
            .clone()
            .or_else(|| std::env::var_os("VAULT_CACERT").map(PathBuf::from));
        let ca_pem = match &ca_path {
            Some(path) => Some(std::fs::read(path).map_err(|err| {
                (
                    "ca_cert",
                    format!("cannot read CA certificate {}: {err}", path.display()),
                )
            })?),
            None => None,
        };
        let client = KvClient::new(
            address,
            token,
            namespace,
            ca_pem.as_deref(),
            spec.timeout,
            shared,
        )
        .map_err(|message| ("ca_cert", message))?;
        let mount = split_path(&spec.mount).map_err(|m| ("mount", m))?;
        let path = split_path(&spec.path).map_err(|m| ("path", m))?;
        Ok(Self {
            name: name.to_string(),
            spec,
            client,
            mount,
            path,
        })
    }

    fn secret_name(&self) -> String {
        format!("{}/{}", self.mount.join("/"), self.path.join("/"))
    }

    /// Maps a client error to a target error that names this secret.
    fn error(&self, action: &str, err: KvError) -> TargetError {
        let secret = self.secret_name();
        if err.is_invalid_versioned_path() {
            return TargetError::Misconfigured(format!(
                "{action} {secret}: Vault says the path is invalid for a versioned K/V store; check that `mount` is the KV v2 mount itself and `path` the secret inside it"
            ));
        }
        if matches!(err, KvError::Unreachable { .. }) {
            return TargetError::Unavailable(format!("{action} {secret}: {err}"));
        }
        match err.status() {
            Some(401 | 403) => TargetError::Denied(format!(
                "{action} {secret}: permission denied; the token needs a policy that allows it ({err})"
            )),
            Some(400) if err.is_cas_mismatch() => TargetError::ConcurrentModification(format!(
                "{action} {secret}: the secret changed since preflight (check-and-set did not match)"
            )),
            Some(status) if status >= 500 || status == 429 => {
                TargetError::Unavailable(format!("{action} {secret}: {err}"))
            }
            _ => TargetError::InvalidResponse(format!("{action} {secret}: {err}")),
        }
    }

    async fn check_mount(&self) -> Result<(), TargetError> {
        let info = self
            .client
            .mount_info(&self.mount)
            .await
            .map_err(|err| match err.status() {
                Some(400 | 403 | 404) => TargetError::Misconfigured(format!(
                    "mount {} was not found at {}, or the token in {} may not use it ({err})",
                    self.spec.mount,
                    self.client.address(),
                    self.spec.token_env
                )),
                _ => self.error("looking up the mount of", err),
            })?;
        let expected = format!("{}/", self.mount.join("/"));
        if info.path != expected {
            return Err(TargetError::Misconfigured(format!(
                "there is no mount at {expected}: the path is inside mount {}; set `mount: {}` and put the rest into `path`",
                info.path,
                info.path.trim_end_matches('/')
            )));
        }
        if !matches!(info.kind.as_str(), "kv" | "generic") {
            return Err(TargetError::Misconfigured(format!(
                "mount {expected} is a {} secrets engine, not KV",
                info.kind
            )));
        }
        if info.version != "2" {
            return Err(TargetError::Misconfigured(format!(
                "mount {expected} is KV version 1, which has no versions or check-and-set; keywheel needs KV version 2 (upgrade with `bao kv enable-versioning {}`)",
                info.path.trim_end_matches('/')
            )));
        }
        Ok(())
    }

    /// The data to write: `base` with every managed field set to the key.
    fn desired(&self, base: &SecretData, key: &Key) -> Result<SecretData, TargetError> {
        let mut data = base.clone();
        for (field, value) in mapped_values(key, &self.spec.set)? {
            let text = value.expose_str().ok_or_else(|| {
                TargetError::Misconfigured(format!("the value for field {field} is not UTF-8 text"))
            })?;
            data.insert(field, serde_json::Value::String(text.to_string()));
        }
        Ok(data)
    }

    /// Whether the managed fields of `data` equal those of `expected`.
    fn managed_equal(&self, data: &SecretData, expected: &SecretData) -> bool {
        self.spec
            .set
            .keys()
            .all(|field| data.get(field) == expected.get(field))
    }

    /// Writes `data` with check-and-set on `cas`. When the version moved
    /// because the current version was soft-deleted or destroyed, retries
    /// once with the current version: nothing live is overwritten then. When
    /// the current version holds exactly `data`, it is this write: an
    /// attempt whose response was lost (a timeout, a reset) took effect, and
    /// the client's retry then found the version moved. Any other mismatch
    /// is a concurrent modification. Never writes without check-and-set.
    async fn write_cas(&self, data: &SecretData, cas: u64) -> Result<u64, TargetError> {
        match self.client.write(&self.mount, &self.path, data, cas).await {
            Ok(version) => return Ok(version),
            Err(err) if err.is_cas_mismatch() => {}
            Err(err) => return Err(self.error("writing", err)),
        }
        let metadata = self
            .client
            .metadata(&self.mount, &self.path)
            .await
            .map_err(|err| self.error("reading metadata of", err))?
            .unwrap_or_default();
        let current = metadata.current_version;
        if current > cas && !metadata.is_deleted(current) {
            let found = self
                .client
                .read(&self.mount, &self.path, current)
                .await
                .map_err(|err| self.error("reading", err))?;
            if found.as_ref() == Some(data) {
                tracing::info!(target = %self.name, cas, current, "the check-and-set mismatch is this write's own earlier attempt");
                return Ok(current);
            }
        }
        if current == cas || !metadata.is_deleted(current) {
            return Err(TargetError::ConcurrentModification(format!(
                "{} changed since preflight: expected version {cas}, found version {current} with live data; run `keywheel rollback` and start again",
                self.secret_name()
            )));
        }
        tracing::info!(target = %self.name, cas, current, "current version is deleted; retrying check-and-set on it");
        self.client
            .write(&self.mount, &self.path, data, current)
            .await
            .map_err(|err| match err.is_cas_mismatch() {
                true => TargetError::ConcurrentModification(format!(
                    "{} changed twice during the write; run `keywheel rollback` and start again",
                    self.secret_name()
                )),
                false => self.error("writing", err),
            })
    }

    async fn read_back(&self, version: u64, expected: &SecretData) -> Result<(), TargetError> {
        let data = self
            .client
            .read(&self.mount, &self.path, version)
            .await
            .map_err(|err| self.error("reading back", err))?
            .unwrap_or_default();
        if !self.managed_equal(&data, expected) {
            return Err(TargetError::ReadBackMismatch(format!(
                "version {version} of {} does not hold the values just written",
                self.secret_name()
            )));
        }
        Ok(())
    }

    async fn current(&self) -> Result<(u64, Option<SecretData>), TargetError> {
        let metadata = self
            .client
            .metadata(&self.mount, &self.path)
            .await
            .map_err(|err| self.error("reading metadata of", err))?;
        let Some(metadata) = metadata else {
            return Ok((0, None));
        };
        let version = metadata.current_version;
        let data = self
            .client
            .read(&self.mount, &self.path, version)
            .await
            .map_err(|err| self.error("reading", err))?;
        Ok((version, data))
    }
}

fn parse_state(snapshot: &Snapshot) -> Result<(VaultState, SecretData), TargetError> {
    let state: VaultState = serde_json::from_value(snapshot.state.clone()).map_err(|err| {
        TargetError::InvalidResponse(format!("journaled vault state is invalid: {err}"))
    })?;
    let previous: SecretData = if snapshot.previous.is_empty() {
        SecretData::new()
    } else {
        serde_json::from_slice(snapshot.previous.expose())
            .map_err(|_| TargetError::InvalidResponse("journaled vault data is invalid".into()))?
    };
    Ok((state, previous))
}

/// A restore that found a value written by someone else since preflight:
/// the new key is not current there, so there is nothing to undo, and
/// overwriting the other writer would lose their change.
fn left_alone(target: &str, version: u64, why: &str) -> Receipt {
    tracing::warn!(target, version, "restore left a secret alone: {why}");
    receipt(
        version,
        format!("left version {version} alone: {why}, so someone else wrote it after preflight"),
    )
    .left_alone()
}

fn receipt(version: u64, summary: String) -> Receipt {
    Receipt {
        state: serde_json::json!({"version": version}),
        summary,
    }
}

#[async_trait]
impl Target for VaultTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        format!(
            "vault {} {} ({})",
            self.client.address().as_str().trim_end_matches('/'),
            self.secret_name(),
            self.spec.set.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    }

    fn previous_fields(&self, snapshot: &Snapshot) -> crate::targets::HeldFields {
        let Ok((_, previous)) = parse_state(snapshot) else {
            return Default::default();
        };
        self.spec
            .set
            .iter()
            .filter_map(|(slot, field)| {
                previous
                    .get(slot)
                    .and_then(serde_json::Value::as_str)
                    .map(|value| (field.clone(), SecretBytes::from_text(value)))
            })
            .collect()
    }

    async fn preflight(&self, _cx: &TargetCx) -> Result<Snapshot, TargetError> {
        self.check_mount().await?;
        let metadata = self
            .client
            .metadata(&self.mount, &self.path)
            .await
            .map_err(|err| self.error("reading metadata of", err))?;
        let Some(metadata) = metadata else {
            if !self.spec.create {
                return Err(TargetError::Misconfigured(format!(
                    "secret {} does not exist; create it, or set `create: true` to let keywheel create it",
                    self.secret_name()
                )));
            }
            let state = VaultState {
                existed: false,
                version: 0,
                deleted: false,
                missing_fields: self.spec.set.keys().cloned().collect(),
            };
            return Ok(Snapshot {
                summary: "secret will be created".into(),
                state: serde_json::to_value(&state).unwrap_or_default(),
                previous: SecretBytes::default(),
            });
        };
        let version = metadata.current_version;
        let deleted = metadata.is_deleted(version);
        let data = if deleted {
            SecretData::new()
        } else {
            self.client
                .read(&self.mount, &self.path, version)
                .await
                .map_err(|err| self.error("reading", err))?
                .unwrap_or_default()
        };
        let missing: Vec<String> = self
            .spec
            .set
            .keys()
            .filter(|f| !data.contains_key(*f))
            .cloned()
            .collect();
        if !missing.is_empty() && !self.spec.create {
            return Err(TargetError::Misconfigured(format!(
                "secret {} has no field {}; add it, or set `create: true` to let keywheel add it",
                self.secret_name(),
                missing.join(", ")
            )));
        }
        let mut summary = format!("version {version}");
        if deleted {
            summary.push_str(" (deleted)");
        }
        if metadata.cas_required {
            summary.push_str(", cas required");
        }
        let state = VaultState {
            existed: true,
            version,
            deleted,
            missing_fields: missing,
        };
        let previous = SecretBytes::new(serde_json::to_vec(&data).unwrap_or_default());
        Ok(Snapshot {
            summary,
            state: serde_json::to_value(&state).unwrap_or_default(),
            previous,
        })
    }

    async fn push(
        &self,
        _cx: &TargetCx,
        snapshot: &Snapshot,
        key: &Key,
    ) -> Result<Receipt, TargetError> {
        let (state, previous) = parse_state(snapshot)?;
        let desired = self.desired(&previous, key)?;

        // After a crash the write may already have happened: find it by
        // content rather than write a second version.
        let (current_version, current_data) = self.current().await?;
        if current_version > state.version
            && let Some(data) = &current_data
            && self.managed_equal(data, &desired)
        {
            return Ok(receipt(
                current_version,
                format!("version {current_version} already written"),
            ));
        }

        let version = self.write_cas(&desired, state.version).await?;
        self.read_back(version, &desired).await?;
        Ok(receipt(version, format!("wrote version {version}")))
    }

    async fn restore(
        &self,
        _cx: &TargetCx,
        snapshot: &Snapshot,
        key: &Key,
    ) -> Result<Receipt, TargetError> {
        let (state, previous) = parse_state(snapshot)?;
        let pushed = self.desired(&previous, key)?;
        let (current_version, current_data) = self.current().await?;

        if current_version == state.version {
            return Ok(receipt(
                current_version,
                "still at the version seen at preflight".into(),
            ));
        }
        let Some(current) = current_data else {
            return Ok(left_alone(
                &self.name,
                current_version,
                "its current version is deleted",
            ));
        };
        if self.managed_equal(&current, &previous) {
            return Ok(receipt(
                current_version,
                "managed fields already hold their previous values".into(),
            ));
        }
        if !self.managed_equal(&current, &pushed) {
            return Ok(left_alone(
                &self.name,
                current_version,
                "it holds neither the new nor the previous values",
            ));
        }

        if !state.existed {
            // Only a secret that still is exactly what this run created is
            // deleted; once someone else added a field or a version, only
            // the managed fields are removed.
            let only_ours = current_version == 1
                && current
                    .keys()
                    .all(|field| self.spec.set.contains_key(field));
            if only_ours {
                self.client
                    .delete_all(&self.mount, &self.path)
                    .await
                    .map_err(|err| self.error("deleting", err))?;
                return Ok(receipt(0, "deleted the secret keywheel created".into()));
            }
        }
        if state.deleted {
            self.client
                .delete_versions(&self.mount, &self.path, &[current_version])
                .await
                .map_err(|err| self.error("deleting the new version of", err))?;
            return Ok(receipt(
                current_version,
                format!("deleted version {current_version}, as the previous version was deleted"),
            ));
        }

        // Put the managed fields back; fields others changed since the push
        // are kept.
        let mut restored = current.clone();
        for field in self.spec.set.keys() {
            match previous.get(field) {
                Some(value) => restored.insert(field.clone(), value.clone()),
                None => restored.remove(field),
            };
        }
        let version = self.write_cas(&restored, current_version).await?;
        self.read_back(version, &restored).await?;
        Ok(receipt(
            version,
            format!("wrote version {version} with the previous values"),
        ))
    }
}
