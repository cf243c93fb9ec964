//! libFuzzer harness for [`sluice_fuzz::stage_plan`]: bad input must be an error, never a panic.
//!
//! Run: `cargo +nightly fuzz run stage_plan -- -runs=10000000` (see the README's Fuzzing section).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::stage_plan(data));
