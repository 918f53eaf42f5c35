//! The `random` issuer: a key generated locally from the operating system's
//! random number generator.
//!
//! ```yaml
//! issuer:
//!   type: random
//!   length: 40               # characters after the prefix (default 40)
//!   alphabet: alphanumeric   # a named set, or a list of them
//!   exclude: "0OIl"          # characters never used
//!   prefix: sk_live_         # written before the random part
//! ```
//!
//! Named sets: `lower`, `upper`, `digits`, `alphanumeric`, `hex`,
//! `base64url`, `symbols`. `characters: "..."` gives the set explicitly
//! instead. Each character is drawn uniformly, by rejection sampling, so no
//! character is more likely than another. The issuer keeps no record of
//! keys, so the old value is simply replaced.

use async_trait::async_trait;

use super::{CurrentFields, Issuer, IssuerCx, IssuerError, IssuerSnapshot, Revocation};
use crate::key::Key;
use crate::playbook::decode::{Cx, FieldPath, MapReader, closest};
use crate::playbook::yaml::{Node, Value};
use crate::secret::SecretBytes;

/// The one field a random key has.
pub const SECRET_FIELD: &str = "secret";

const DEFAULT_LENGTH: usize = 40;
const MAX_LENGTH: usize = 4096;
const MAX_PREFIX: usize = 64;
/// Keys with less entropy than this get a warning.
const RECOMMENDED_BITS: f64 = 128.0;

const SETS: &[(&str, &str)] = &[
    ("lower", "abcdefghijklmnopqrstuvwxyz"),
    ("upper", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    ("digits", "0123456789"),
    (
        "alphanumeric",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    ),
    ("hex", "0123456789abcdef"),
    (
        "base64url",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    ),
    ("symbols", "!#$%&()*+,-./:;<=>?@[]^_{|}~"),
];

#[derive(Clone, Debug)]
pub struct RandomSpec {
    pub length: usize,
    /// The characters to draw from, exclusions already removed, in a fixed
    /// order and without duplicates.
    pub alphabet: Vec<char>,
    pub prefix: String,
}

impl RandomSpec {
    pub fn decode(reader: &mut MapReader<'_>, cx: &mut Cx) -> Self {
        let length = match reader.value("length") {
            Some(node) => decode_length(node, &reader.path_of("length"), cx),
            None => DEFAULT_LENGTH,
        };
        let named = reader.value("alphabet");
        let explicit = reader.optional::<String>("characters", cx);
        let mut alphabet: Vec<char> = match (named, &explicit) {
            (Some(node), Some(_)) => {
                cx.error_hint(
                    node,
                    &reader.path_of("alphabet"),
                    "`alphabet` and `characters` cannot both be set",
                    "name sets in `alphabet`, or list exact characters in `characters`",
                );
                Vec::new()
            }
            (Some(node), None) => decode_sets(node, &reader.path_of("alphabet"), cx),
            (None, Some(text)) => text.chars().collect(),
            (None, None) => set_chars("alphanumeric"),
        };
        let mut seen = std::collections::BTreeSet::new();
        alphabet.retain(|c| seen.insert(*c));

        let exclude = reader.optional::<String>("exclude", cx).unwrap_or_default();
        let before = alphabet.len();
        alphabet.retain(|c| !exclude.contains(*c));
        if alphabet.is_empty() && before > 0 {
            let node = reader.value("exclude").unwrap_or(reader.node());
            cx.error_hint(
                node,
                &reader.path_of("exclude"),
                "no characters are left after the exclusions",
                "exclude fewer characters or choose a larger alphabet",
            );
        } else if explicit.as_deref() == Some("") {
            let node = reader.value("characters").unwrap_or(reader.node());
            cx.error(node, &reader.path_of("characters"), "`characters` is empty");
        }
        if let Some(c) = alphabet
            .iter()
            .find(|c| c.is_control() || c.is_whitespace())
        {
            let node = reader.value("characters").unwrap_or(reader.node());
            cx.error_hint(
                node,
                &reader.path_of("characters"),
                format!("the alphabet contains the blank or control character {c:?}"),
                "keys with blanks break headers and files; remove it",
            );
        }

        let prefix = reader.optional::<String>("prefix", cx).unwrap_or_default();
        if let Some(node) = reader.value("prefix") {
            let valid = prefix.len() <= MAX_PREFIX && prefix.chars().all(|c| c.is_ascii_graphic());
            if !valid {
                cx.error_hint(
                    node,
                    &reader.path_of("prefix"),
                    format!("invalid prefix {prefix:?}"),
                    format!("use up to {MAX_PREFIX} printable ASCII characters without blanks"),
                );
            }
        }

        if alphabet.len() > 1 && length > 0 {
            let bits = length as f64 * (alphabet.len() as f64).log2();
            if bits < RECOMMENDED_BITS {
                let node = reader.value("length").unwrap_or(reader.node());
                cx.warn(
                    node,
                    &reader.path_of("length"),
                    format!(
                        "keys have about {bits:.0} bits of entropy, below the recommended {RECOMMENDED_BITS:.0}; raise `length`"
                    ),
                );
            }
        }
        Self {
            length,
            alphabet,
            prefix,
        }
    }

    /// Returns the schema of a `random` issuer.
    pub fn schema() -> serde_json::Value {
        use crate::playbook::schema::{at_most_one, integer, kind_tag, object, string, with_rules};
        let set_names: Vec<&str> = SETS.iter().map(|(name, _)| *name).collect();
        let set = serde_json::json!({"enum": set_names});
        let mut length = integer(
            "Random characters after the prefix.",
            1,
            Some(MAX_LENGTH as u64),
        );
        length["default"] = DEFAULT_LENGTH.into();
        let alphabet = serde_json::json!({
            "description": "Named character sets to draw from: one name or a list.",
            "anyOf": [set, {"type": "array", "minItems": 1, "items": set}],
            "default": "alphanumeric",
        });
        let prefix = serde_json::json!({
            "description": "Written before the random part, such as sk_live_.",
            "type": "string",
            "pattern": format!("^[!-~]{{0,{MAX_PREFIX}}}$"),
        });
        let properties = vec![
            ("type", kind_tag("random")),
            ("length", length),
            ("alphabet", alphabet),
            (
                "characters",
                string("The exact characters to draw from, instead of `alphabet`."),
            ),
            ("exclude", string("Characters never used.")),
            ("prefix", prefix),
        ];
        let schema = object(
            "A key drawn from the operating system's random number generator. Its one \
             field is `secret`.",
            properties,
            &["type"],
        );
        with_rules(schema, vec![at_most_one(&["alphabet", "characters"])])
    }

    /// Draws one key value: the prefix and `length` random characters.
    pub fn generate(&self) -> Result<SecretBytes, IssuerError> {
        let mut out = Vec::with_capacity(self.prefix.len() + self.length * 4);
        out.extend_from_slice(self.prefix.as_bytes());
        let indexes = uniform_indexes(self.alphabet.len(), self.length)?;
        let mut buffer = [0u8; 4];
        for index in indexes {
            out.extend_from_slice(self.alphabet[index].encode_utf8(&mut buffer).as_bytes());
        }
        Ok(SecretBytes::new(out))
    }
}

fn decode_length(node: &Node, path: &FieldPath, cx: &mut Cx) -> usize {
    use crate::playbook::decode::Decode;
    let Some(length) = usize::decode(node, path, cx) else {
        return DEFAULT_LENGTH;
    };
    if length == 0 || length > MAX_LENGTH {
        cx.error_hint(
            node,
            path,
            format!("invalid length {length}"),
            format!("use a length from 1 to {MAX_LENGTH}"),
        );
        return DEFAULT_LENGTH;
    }
    length
}

fn set_chars(name: &str) -> Vec<char> {
    SETS.iter()
        .find(|(set, _)| *set == name)
        .map(|(_, chars)| chars.chars().collect())
        .unwrap_or_default()
}

fn decode_sets(node: &Node, path: &FieldPath, cx: &mut Cx) -> Vec<char> {
    let names: Vec<(&Node, FieldPath)> = match &node.value {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, n)| (n, path.index(i)))
            .collect(),
        _ => vec![(node, path.clone())],
    };
    let known: Vec<&str> = SETS.iter().map(|(name, _)| *name).collect();
    let mut chars = Vec::new();
    for (item, item_path) in names {
        use crate::playbook::decode::Decode;
        let Some(name) = String::decode(item, &item_path, cx) else {
            continue;
        };
        if known.contains(&name.as_str()) {
            chars.extend(set_chars(&name));
            continue;
        }
        let hint = match closest(&name, &known) {
            Some(suggestion) => format!("did you mean `{suggestion}`?"),
            None => format!(
                "named sets are {}; list exact characters in `characters` instead",
                known.join(", ")
            ),
        };
        cx.error_hint(
            item,
            &item_path,
            format!("unknown character set {name:?}"),
            hint,
        );
    }
    chars
}

/// Draws `count` indexes uniform in `0..size` from the OS random number
/// generator, rejecting draws that would make low indexes likelier.
fn uniform_indexes(size: usize, count: usize) -> Result<Vec<usize>, IssuerError> {
    let size = u32::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| IssuerError::Misconfigured("the alphabet is empty or too large".into()))?;
    // Largest multiple of `size` that fits in a u32: draws at or above it
    // are rejected.
    let zone = u32::MAX - (u32::MAX % size);
    let mut out = Vec::with_capacity(count);
    let mut buffer = vec![0u8; 4 * (count + 16)];
    while out.len() < count {
        crate::secret::os_random(&mut buffer).map_err(IssuerError::Unavailable)?;
        for chunk in buffer.chunks_exact(4) {
            let draw = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            if draw < zone && out.len() < count {
                out.push((draw % size) as usize);
            }
        }
    }
    zeroize::Zeroize::zeroize(&mut buffer);
    Ok(out)
}

pub struct RandomIssuer {
    spec: RandomSpec,
}

impl RandomIssuer {
    pub fn new(spec: RandomSpec) -> Self {
        Self { spec }
    }
}

#[async_trait]
impl Issuer for RandomIssuer {
    fn kind(&self) -> &'static str {
        "random"
    }

    fn revocation(&self) -> Revocation {
        Revocation::Replace
    }

    async fn preflight(
        &self,
        _cx: &IssuerCx,
        _current: &CurrentFields,
    ) -> Result<IssuerSnapshot, IssuerError> {
        let alphabet = self.spec.alphabet.len();
        Ok(IssuerSnapshot {
            state: serde_json::json!({"length": self.spec.length, "alphabet_size": alphabet}),
            old_key_id: None,
            summary: format!(
                "random key: {} characters from {alphabet}{}",
                self.spec.length,
                if self.spec.prefix.is_empty() {
                    String::new()
                } else {
                    format!(" after prefix {:?}", self.spec.prefix)
                }
            ),
        })
    }

    async fn create(&self, cx: &IssuerCx, _snapshot: &IssuerSnapshot) -> Result<Key, IssuerError> {
        let value = self.spec.generate()?;
        Ok(Key::new(format!("random-{}", cx.run_id)).with_field(SECRET_FIELD, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(length: usize, alphabet: &str, prefix: &str) -> RandomSpec {
        RandomSpec {
            length,
            alphabet: alphabet.chars().collect(),
            prefix: prefix.to_string(),
        }
    }

    #[test]
    fn generate_has_prefix_and_length() {
        let key = spec(32, "ab", "sk_live_").generate().unwrap();
        let text = key.expose_str().unwrap();
        assert!(text.starts_with("sk_live_"));
        assert_eq!(text.len(), "sk_live_".len() + 32);
    }

    #[test]
    fn every_character_is_used_about_equally() {
        let alphabet = "abc";
        let key = spec(30_000, alphabet, "").generate().unwrap();
        for c in alphabet.chars() {
            let count = key
                .expose_str()
                .unwrap()
                .chars()
                .filter(|x| *x == c)
                .count();
            assert!((9_000..11_000).contains(&count), "{c}: {count}");
        }
    }
}
