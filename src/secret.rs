//! Byte strings that hold secret values.
//!
//! Every secret that keywheel handles (a generated key, a value read from a
//! target before it is replaced, a field of a sealed journal record) lives in
//! a [`SecretBytes`]: its memory is zeroed when dropped, and its `Debug` and
//! `Display` output never shows the value, so a secret cannot reach a log line
//! or an error message by accident.

use std::fmt;

use zeroize::Zeroizing;

/// A secret value: opaque bytes that are zeroed on drop and never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps `bytes`, taking ownership so that no unzeroed copy is left behind.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies a string into a new secret.
    pub fn from_text(text: &str) -> Self {
        Self::new(text.as_bytes().to_vec())
    }

    /// Returns the secret bytes. Callers must not log or format them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Returns the value as UTF-8, or `None` when it is not valid UTF-8.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares two secrets in time that does not depend on where they differ.
    pub fn constant_time_eq(&self, other: &SecretBytes) -> bool {
        let (a, b) = (self.expose(), other.expose());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([redacted, {} bytes])", self.0.len())
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Fills `buffer` from the operating system's random number generator.
pub fn os_random(buffer: &mut [u8]) -> Result<(), String> {
    use rand::TryRng as _;
    rand::rngs::SysRng
        .try_fill_bytes(buffer)
        .map_err(|err| format!("the operating system's random number generator failed: {err}"))
}

/// Replaces known secret values in text that came from outside, such as a
/// program's stderr or a server's error message, before it is shown.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Vec<SecretBytes>,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value to hide. Empty values are ignored.
    pub fn add(&mut self, secret: &SecretBytes) {
        if !secret.is_empty() {
            self.secrets.push(secret.clone());
        }
    }

    /// Returns `text` with every occurrence of a known secret replaced by
    /// `[redacted]`. Longer secrets are replaced first, so a secret that
    /// contains another is hidden whole.
    pub fn redact(&self, text: &str) -> String {
        let mut secrets: Vec<&str> = self
            .secrets
            .iter()
            .filter_map(SecretBytes::expose_str)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut out = text.to_string();
        for secret in secrets {
            if out.contains(secret) {
                out = out.replace(secret, "[redacted]");
            }
        }
        out
    }
}

/// Replaces every word that looks like a credential (at least 20
/// characters of letters, digits and `-_+/=.`, with both letters and
/// digits, and at least 3.5 bits of entropy per character) with
/// `[redacted]`. For text from programs keywheel runs, which may print a
/// secret keywheel never saw; it also hides some harmless long ids.
pub fn redact_credential_like(text: &str) -> String {
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "-_+/=.".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if looks_like_credential(word) {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_token_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn looks_like_credential(word: &str) -> bool {
    if word.len() < 20
        || !word.chars().any(|c| c.is_ascii_digit())
        || !word.chars().any(|c| c.is_ascii_alphabetic())
    {
        return false;
    }
    let mut counts = std::collections::HashMap::new();
    for c in word.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    let length = word.chars().count() as f64;
    let entropy: f64 = counts
        .values()
        .map(|&n| {
            let p = n as f64 / length;
            -p * p.log2()
        })
        .sum();
    entropy >= 3.5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_like_words_are_redacted() {
        let text =
            "create failed for sk_live_9fQ2xW7LmZ3kP8sR4tY6uV1nB0cD: quota; see /var/log/app.log";
        let redacted = redact_credential_like(text);
        assert!(
            !redacted.contains("9fQ2xW7LmZ3kP8sR4tY6uV1nB0cD"),
            "{redacted}"
        );
        assert!(redacted.contains("/var/log/app.log"), "{redacted}");
        assert!(
            redacted.contains("create failed for [redacted]: quota"),
            "{redacted}"
        );
        assert_eq!(
            redact_credential_like("aaaaaaaaaaaaaaaaaaaaaaaa1"),
            "aaaaaaaaaaaaaaaaaaaaaaaa1"
        );
    }

    #[test]
    fn debug_and_display_hide_value() {
        let secret = SecretBytes::from_text("sk_live_do_not_print");
        assert!(!format!("{secret:?}").contains("do_not_print"));
        assert!(!format!("{secret}").contains("do_not_print"));
    }

    #[test]
    fn redactor_hides_longest_match_first() {
        let mut redactor = Redactor::new();
        redactor.add(&SecretBytes::from_text("abc"));
        redactor.add(&SecretBytes::from_text("abcdef"));
        redactor.add(&SecretBytes::from_text(""));
        assert_eq!(
            redactor.redact("x abcdef y abc"),
            "x [redacted] y [redacted]"
        );
    }

    #[test]
    fn constant_time_eq_compares_content() {
        let a = SecretBytes::from_text("abc");
        assert!(a.constant_time_eq(&SecretBytes::from_text("abc")));
        assert!(!a.constant_time_eq(&SecretBytes::from_text("abd")));
        assert!(!a.constant_time_eq(&SecretBytes::from_text("ab")));
    }
}
