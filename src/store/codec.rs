//! Framing of journal records on disk.
//!
//! One record per line: eight hex digits of the CRC-32 of the JSON body, a
//! space, the JSON body, a newline. A crash can only damage the end of the
//! file (records are appended and synced one at a time), so a last line
//! that is incomplete or fails its checksum is a torn write and is ignored.
//! A damaged line anywhere else, or a sequence number out of order, is
//! corruption: the reader stops with an error that names the line.

use super::{RawRecord, StoreError};

/// Frames one record for appending.
pub fn encode(record: &RawRecord) -> Vec<u8> {
    let checksum = crc32fast::hash(record.json.as_bytes());
    let mut line = format!("{checksum:08x} ").into_bytes();
    line.extend_from_slice(record.json.as_bytes());
    line.push(b'\n');
    line
}

/// The records of a journal, and where the last valid one ends.
#[derive(Debug)]
pub struct Decoded {
    pub records: Vec<RawRecord>,
    /// Byte length of the valid prefix; anything after it is a torn write.
    pub valid_len: u64,
    /// Whether a torn last record was found and ignored.
    pub torn_tail: bool,
}

/// Decodes a whole journal file. `what` names it in errors.
pub fn decode(bytes: &[u8], what: &str) -> Result<Decoded, StoreError> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    let mut line_number = 0usize;
    while offset < bytes.len() {
        line_number += 1;
        let rest = &bytes[offset..];
        let newline = rest.iter().position(|b| *b == b'\n');
        let line = &rest[..newline.unwrap_or(rest.len())];
        let is_last = newline.is_none_or(|n| offset + n + 1 >= bytes.len());
        let parsed = newline
            .ok_or("incomplete line")
            .and_then(|_| parse_line(line));
        match parsed {
            Ok((seq, json)) => {
                let expected = records.len() as u64 + 1;
                if seq != expected {
                    return Err(StoreError::Corrupt {
                        what: what.to_string(),
                        line: line_number,
                        reason: format!("sequence number {seq} where {expected} was expected"),
                    });
                }
                records.push(RawRecord { seq, json });
                offset += line.len() + 1;
            }
            Err(_) if is_last => {
                return Ok(Decoded {
                    records,
                    valid_len: offset as u64,
                    torn_tail: true,
                });
            }
            Err(reason) => {
                return Err(StoreError::Corrupt {
                    what: what.to_string(),
                    line: line_number,
                    reason: reason.to_string(),
                });
            }
        }
    }
    Ok(Decoded {
        records,
        valid_len: offset as u64,
        torn_tail: false,
    })
}

fn parse_line(line: &[u8]) -> Result<(u64, String), &'static str> {
    if line.len() < 10 || line[8] != b' ' {
        return Err("line is not a framed record");
    }
    let checksum = std::str::from_utf8(&line[..8])
        .ok()
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or("checksum is not hexadecimal")?;
    let body = &line[9..];
    if crc32fast::hash(body) != checksum {
        return Err("checksum mismatch");
    }
    let json = std::str::from_utf8(body).map_err(|_| "record is not UTF-8")?;
    #[derive(serde::Deserialize)]
    struct SeqOnly {
        seq: u64,
    }
    let seq = serde_json::from_str::<SeqOnly>(json)
        .map_err(|_| "record has no sequence number")?
        .seq;
    Ok((seq, json.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> RawRecord {
        RawRecord {
            seq,
            json: format!("{{\"seq\":{seq},\"event\":\"x\"}}"),
        }
    }

    fn journal(count: u64) -> Vec<u8> {
        (1..=count).flat_map(|seq| encode(&record(seq))).collect()
    }

    #[test]
    fn round_trip() {
        let decoded = decode(&journal(3), "j").unwrap();
        assert_eq!(decoded.records.len(), 3);
        assert!(!decoded.torn_tail);
        assert_eq!(decoded.valid_len as usize, journal(3).len());
    }

    #[test]
    fn torn_last_record_is_ignored() {
        let full = journal(3);
        for cut in 1..encode(&record(3)).len() {
            let bytes = &full[..full.len() - cut];
            let decoded = decode(bytes, "j").unwrap();
            assert_eq!(decoded.records.len(), 2, "cut {cut}");
            assert!(decoded.torn_tail);
            assert_eq!(decoded.valid_len as usize, journal(2).len());
        }
    }

    #[test]
    fn damaged_last_record_with_newline_is_torn() {
        let mut bytes = journal(3);
        let len = bytes.len();
        bytes[len - 3] ^= 0x01;
        let decoded = decode(&bytes, "j").unwrap();
        assert_eq!(decoded.records.len(), 2);
        assert!(decoded.torn_tail);
    }

    #[test]
    fn damage_before_the_end_is_corruption() {
        let mut bytes = journal(3);
        bytes[12] ^= 0x01;
        let err = decode(&bytes, "j").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { line: 1, .. }), "{err}");
    }

    #[test]
    fn out_of_order_sequence_is_corruption() {
        let mut bytes = encode(&record(1));
        bytes.extend(encode(&record(3)));
        bytes.extend(encode(&record(4)));
        let err = decode(&bytes, "j").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { line: 2, .. }), "{err}");
    }
}
