//! Fuzz target: `cutover::fuzzing::h1_response` (its invariants are stated there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cutover::fuzzing::h1_response(data));
