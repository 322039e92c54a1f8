//! Fuzzes the policy parser: any text must be accepted as a valid policy or refused with an
//! error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = cosigner::policy::parse(text, std::path::Path::new("fuzz.toml"), &|_| {
        Ok("TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7\n".to_string())
    });
});
