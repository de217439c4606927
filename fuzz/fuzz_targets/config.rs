//! Fuzz target: `cutover::fuzzing::config` (its invariants are stated there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cutover::fuzzing::config(data));
