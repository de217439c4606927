//! Fuzz target: `cutover::fuzzing::chunked` (its invariants are stated there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cutover::fuzzing::chunked(data));
