//! libFuzzer harness for [`sluice_fuzz::state_changelog`]: bad input must be an error, never a panic.
//!
//! Run: `cargo +nightly fuzz run state_changelog -- -runs=10000000` (see the README's Fuzzing section).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::state_changelog(data));
