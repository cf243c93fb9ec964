//! libFuzzer harness for [`sluice_fuzz::streaming_sql`]: bad input must be an error, never a panic.
//!
//! Run: `cargo +nightly fuzz run streaming_sql -- -runs=10000000` (see the README's Fuzzing section).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::streaming_sql(data));
