//! libFuzzer harness for [`sluice_fuzz::checkpoint_records`]: bad input must be an error, never a panic.
//!
//! Run: `cargo +nightly fuzz run checkpoint_records -- -runs=10000000` (see the README's Fuzzing section).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::checkpoint_records(data));
