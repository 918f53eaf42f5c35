//! Secrets a test never registered but keywheel sealed: every new key and
//! every value a target held before its push, opened from the journals of
//! a state directory with the test's seal key, so that the leak scan
//! checks them without each test having to name them.

use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine as _;
use keywheel::engine::record::{Event, Record, key_purpose, target_purpose};
use keywheel::key::Key;
use keywheel::run_id::RunId;
use keywheel::seal::Sealer;
use keywheel::secret::SecretBytes;

/// Shortest value counted as a secret: shorter ones (`1`, `true`) would
/// match ordinary output by chance.
pub const MIN_SECRET_LEN: usize = 8;

/// What the journals of a state directory sealed.
#[derive(Debug, Default)]
pub struct Sealed {
    /// Secret values found in the sealed records.
    pub values: BTreeSet<String>,
    /// Sealed records opened.
    pub opened: usize,
    /// Sealed records the test's key could not open: sealed under another
    /// key on purpose, or damaged by the test.
    pub unopened: usize,
}

/// Opens every sealed value in the journals under `state_dir` with
/// `seal_key` and collects the secrets in them. Public key ids (the old
/// key's and each new key's) are left out, because keywheel prints them.
pub fn sealed_secrets(state_dir: &Path, seal_key: [u8; 32]) -> Sealed {
    let sealer = Sealer::from_key(seal_key);
    let mut sealed = Sealed::default();
    let mut public = BTreeSet::new();
    let Ok(runs) = std::fs::read_dir(state_dir.join("runs")) else {
        return sealed;
    };
    for entry in runs.flatten() {
        let Ok(run_id) = entry.file_name().to_string_lossy().parse::<RunId>() else {
            continue;
        };
        for record in records(&entry.path().join("journal")) {
            open_record(&sealer, &run_id, &record, &mut sealed, &mut public);
        }
    }
    sealed.values.retain(|value| !public.contains(value));
    sealed
}

/// Reads the records of a journal that parse: tests damage journals on
/// purpose, and the intact records still count.
fn records(journal: &Path) -> Vec<Record> {
    let Ok(text) = std::fs::read_to_string(journal) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .filter_map(|(_, json)| serde_json::from_str(json).ok())
        .collect()
}

fn open_record(
    sealer: &Sealer,
    run_id: &RunId,
    record: &Record,
    sealed: &mut Sealed,
    public: &mut BTreeSet<String>,
) {
    match &record.event {
        Event::KeyCreated { key_id, key } => {
            public.insert(key_id.clone());
            let Ok(bytes) = sealer.open(&key_purpose(run_id), key) else {
                sealed.unopened += 1;
                return;
            };
            sealed.opened += 1;
            let Ok(key) = Key::from_sealable(&bytes) else {
                return;
            };
            let names: Vec<String> = key.field_names().map(str::to_string).collect();
            for name in names {
                if let Some(value) = key.field(&name) {
                    add_text(&value, &mut sealed.values);
                }
            }
        }
        Event::Preflight { issuer, targets } => {
            public.extend(issuer.old_key_id.clone());
            for target in targets {
                let purpose = target_purpose(run_id, &target.name);
                let Ok(previous) = sealer.open(&purpose, &target.previous) else {
                    sealed.unopened += 1;
                    continue;
                };
                sealed.opened += 1;
                add_previous(&previous, &mut sealed.values);
            }
        }
        _ => {}
    }
}

/// Adds the values in a target's sealed snapshot. Its format belongs to the
/// target: a JSON document (Vault data, a JSON file, base64 values of a
/// Kubernetes Secret, a Secrets Manager value), a .env file, or a raw key.
fn add_previous(previous: &SecretBytes, values: &mut BTreeSet<String>) {
    let Some(text) = previous.expose_str() else {
        return;
    };
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        add_json(&json, values);
        return;
    }
    add(text.trim(), values);
    for line in text.lines() {
        let line = line.trim().trim_start_matches("export ");
        if let Some((_, value)) = line.split_once('=') {
            let value = value.split(" #").next().unwrap_or_default().trim();
            add(value.trim_matches(['\'', '"']), values);
        }
    }
}

/// Adds every string in `json`, and what a base64 string decodes to.
fn add_json(json: &serde_json::Value, values: &mut BTreeSet<String>) {
    match json {
        serde_json::Value::String(text) => {
            add(text, values);
            if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(text)
                && let Ok(decoded) = String::from_utf8(decoded)
            {
                add(&decoded, values);
            }
            // A JSON document inside a string: a Secrets Manager value.
            if let Ok(inner) = serde_json::from_str::<serde_json::Value>(text)
                && !inner.is_string()
            {
                add_json(&inner, values);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| add_json(v, values)),
        serde_json::Value::Object(map) => map.values().for_each(|v| add_json(v, values)),
        _ => {}
    }
}

fn add_text(secret: &SecretBytes, values: &mut BTreeSet<String>) {
    if let Some(text) = secret.expose_str() {
        add(text, values);
    }
}

fn add(value: &str, values: &mut BTreeSet<String>) {
    if value.len() >= MIN_SECRET_LEN {
        values.insert(value.to_string());
    }
}
