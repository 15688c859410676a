#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coachlibre_fuzz::when(data));
