//! Fuzz target: `cutover::fuzzing::head_scan` (its invariants are stated there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cutover::fuzzing::head_scan(data));
