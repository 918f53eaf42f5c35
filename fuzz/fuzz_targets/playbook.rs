//! Feeds arbitrary text to the playbook parser: it must return a playbook or
//! errors with positions, and never panic, hang or exhaust memory.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("fuzz.yaml");
        if let Err(errors) = keywheel::playbook::parse(path, text) {
            assert!(!errors.diagnostics.is_empty());
            let _ = errors.to_string();
        }
    }
});
