//! Run identifiers: `YYYYMMDD-HHMMSS-mmmxxx`, the UTC start time to the
//! millisecond (`mmm`) followed by three random hex digits, so that ids sort
//! by start time and are safe as file names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    /// Makes a new id from the current time.
    pub fn generate() -> Self {
        let now = jiff::Timestamp::now();
        let stamp = now.strftime("%Y%m%d-%H%M%S").to_string();
        let millis = now.subsec_millisecond();
        let random: u16 = rand::random::<u16>() & 0x0fff;
        Self(format!("{stamp}-{millis:03}{random:03x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` has the shape of a run id. Shorter prefixes are
    /// accepted by [`RunId::is_valid_prefix`].
    pub fn is_valid(text: &str) -> bool {
        let bytes = text.as_bytes();
        bytes.len() == 22 && Self::is_valid_prefix(text) && bytes[8] == b'-' && bytes[15] == b'-'
    }

    /// Whether `text` could start a run id: only digits, lowercase hex and
    /// dashes in the right places, so it is safe to use in a path.
    pub fn is_valid_prefix(text: &str) -> bool {
        !text.is_empty()
            && text.len() <= 22
            && text.bytes().enumerate().all(|(i, b)| match i {
                8 | 15 => b == b'-',
                0..=14 => b.is_ascii_digit(),
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            })
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RunId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if Self::is_valid(text) {
            Ok(Self(text.to_string()))
        } else {
            Err(format!(
                "invalid run id {text:?}: expected the form 20261204-153514-a3f9c1"
            ))
        }
    }
}

impl TryFrom<String> for RunId {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<RunId> for String {
    fn from(id: RunId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid() {
        let id = RunId::generate();
        assert!(RunId::is_valid(id.as_str()), "{id}");
    }

    #[test]
    fn ids_within_a_second_sort_by_time() {
        let first = RunId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = RunId::generate();
        assert!(first < second, "{first} >= {second}");
    }

    #[test]
    fn ids_sort_by_time() {
        let a: RunId = "20261204-153514-ffffff".parse().unwrap();
        let b: RunId = "20261204-153515-000000".parse().unwrap();
        assert!(a < b);
    }

    #[test]
    fn path_like_text_is_rejected() {
        assert!("../../etc".parse::<RunId>().is_err());
        assert!(!RunId::is_valid_prefix("2026/"));
        assert!(RunId::is_valid_prefix("20261204-15"));
    }
}
