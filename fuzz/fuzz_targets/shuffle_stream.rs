//! libFuzzer harness for [`sluice_fuzz::shuffle_stream`]: bad input must be an error, never a panic.
//!
//! Run: `cargo +nightly fuzz run shuffle_stream -- -runs=10000000` (see the README's Fuzzing section).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::shuffle_stream(data));
