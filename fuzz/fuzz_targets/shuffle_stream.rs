//! libFuzzer harness for [`sluice_fuzz::shuffle_stream`]: bad input must be an error, never a panic.
//!
//! Arrow's IPC decoder panics on some malformed streams (a field of type NONE in the schema
//! message, a bitmap shorter than its length); Sluice's reader contains those panics and returns
//! an error. libfuzzer-sys's panic hook aborts even on a contained panic, so this target installs
//! a silent hook instead: a panic that escapes the reader still aborts the run (libfuzzer-sys
//! aborts on any panic that reaches it), and that is the finding.
//!
//! Run: `cargo +nightly fuzz run shuffle_stream -- -runs=10000000` (see the README's Fuzzing section).
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: std::panic::set_hook(Box::new(|_| {})),
    |data: &[u8]| sluice_fuzz::shuffle_stream(data)
);
