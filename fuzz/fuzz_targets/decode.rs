//! Fuzzes the producer-message decoder: it must never panic, and whatever it accepts must hold
//! the contract's invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logfleet_contract::{LimitsSettings, MessageProperties, decode};

fuzz_target!(|data: &[u8]| {
    let limits = LimitsSettings::default();
    if let Ok(m) = decode(data, MessageProperties::default(), &limits) {
        assert!(!m.logs.is_empty() && m.logs.len() <= limits.max_logs_per_message);
        assert!(!m.episode_id.as_str().contains(['/', '$']));
        for log in &m.logs {
            assert!(log.message.len() <= limits.max_log_message_bytes);
            assert!(!log.message.contains('\0'));
        }
    }
});
