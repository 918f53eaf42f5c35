//! Feeds arbitrary bytes to the journal reader and the replay of its
//! records: a damaged journal must be an error or a torn tail, never a
//! panic.

#![no_main]

use keywheel::engine::record::Record;
use keywheel::engine::state::RunState;
use keywheel::store::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = codec::decode(data, "fuzz journal") else {
        return;
    };
    assert!(decoded.valid_len as usize <= data.len());
    let mut records = Vec::new();
    for raw in &decoded.records {
        match serde_json::from_str::<Record>(&raw.json) {
            Ok(record) => records.push(record),
            Err(_) => return,
        }
    }
    let run_id = "20261204-000000-000000".parse().expect("valid run id");
    let state = RunState::replay(run_id, &records);
    let _ = keywheel::engine::report::RunReport::from_state(&state);
});
