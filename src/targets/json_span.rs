//! Finding the bytes of one member's value in JSON text, so that a file
//! target can replace a key in place and leave every other byte of the
//! file (indentation, spacing, number spelling) as the operator wrote it.
//!
//! The scanner expects text that `serde_json` has already accepted; on
//! anything else it returns `None` and the caller writes the whole
//! document instead.

/// Returns the byte range of the value at `segments` (member names from
/// the root object down), or `None` when a member is missing or a parent
/// is not an object.
pub fn value_span(text: &str, segments: &[String]) -> Option<(usize, usize)> {
    let mut scanner = Scanner {
        bytes: text.as_bytes(),
        at: 0,
    };
    scanner.find(segments)
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn find(&mut self, segments: &[String]) -> Option<(usize, usize)> {
        self.skip_whitespace();
        let Some((first, rest)) = segments.split_first() else {
            let start = self.at;
            self.skip_value()?;
            return Some((start, self.at));
        };
        self.expect(b'{')?;
        loop {
            self.skip_whitespace();
            if self.peek()? == b'}' {
                return None;
            }
            let name = self.string()?;
            self.skip_whitespace();
            self.expect(b':')?;
            if name == *first {
                return self.find(rest);
            }
            self.skip_whitespace();
            self.skip_value()?;
            self.skip_whitespace();
            match self.next()? {
                b',' => continue,
                _ => return None,
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    /// Reads a string and returns its decoded value.
    fn string(&mut self) -> Option<String> {
        let start = self.at;
        self.skip_string()?;
        serde_json::from_slice(&self.bytes[start..self.at]).ok()
    }

    fn skip_string(&mut self) -> Option<()> {
        self.expect(b'"')?;
        loop {
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => {
                    self.next()?;
                }
                _ => {}
            }
        }
    }

    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => self.skip_string()?,
                        b'{' | b'[' => {
                            depth += 1;
                            self.at += 1;
                        }
                        b'}' | b']' => {
                            depth -= 1;
                            self.at += 1;
                            if depth == 0 {
                                return Some(());
                            }
                        }
                        _ => self.at += 1,
                    }
                }
            }
            _ => {
                let start = self.at;
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
                ) {
                    self.at += 1;
                }
                (self.at > start).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(names: &[&str]) -> Vec<String> {
        names.iter().map(ToString::to_string).collect()
    }

    fn value_at<'a>(text: &'a str, names: &[&str]) -> Option<&'a str> {
        value_span(text, &segments(names)).map(|(start, end)| &text[start..end])
    }

    #[test]
    fn finds_nested_values() {
        let text = r#"{ "a" : 1.50e2, "b": {"x": [1, {"y": "}"}], "key": "old\"v"}, "c": null }"#;
        assert_eq!(value_at(text, &["a"]), Some("1.50e2"));
        assert_eq!(value_at(text, &["b", "key"]), Some(r#""old\"v""#));
        assert_eq!(value_at(text, &["c"]), Some("null"));
        assert_eq!(value_at(text, &["b", "x"]), Some(r#"[1, {"y": "}"}]"#));
    }

    #[test]
    fn missing_members_and_scalar_parents_have_no_span() {
        let text = r#"{"a": {"b": 1}, "s": "text"}"#;
        assert_eq!(value_at(text, &["z"]), None);
        assert_eq!(value_at(text, &["a", "z"]), None);
        assert_eq!(value_at(text, &["s", "b"]), None);
        assert_eq!(value_at("[1]", &["a"]), None);
    }

    #[test]
    fn escaped_member_names_match() {
        let text = r#"{"a\/b": "v", "\u0041": "w"}"#;
        assert_eq!(value_at(text, &["a/b"]), Some(r#""v""#));
        assert_eq!(value_at(text, &["A"]), Some(r#""w""#));
    }
}
