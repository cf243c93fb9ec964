//! libFuzzer harness for [`sluice_fuzz::kafka_json`]: bad input must be an error, never a panic.
//!
//! Run: `cargo +nightly fuzz run kafka_json -- -runs=10000000` (see the README's Fuzzing section).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::kafka_json(data));
