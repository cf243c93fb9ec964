//! libFuzzer harness for [`sluice_fuzz::stage_plan`]: bad input must be an error, never a panic.
//!
//! datafusion-proto panics on some nodes (an Avro scan without the `avro` feature); the
//! executor's decoder contains such panics and returns an error. libfuzzer-sys's panic hook
//! aborts even on a contained panic, so this target installs a silent hook instead: a panic that
//! escapes the decoder still aborts the run (libfuzzer-sys aborts on any panic reaching it).
//!
//! Run: `cargo +nightly fuzz run stage_plan -- -runs=10000000` (see the README's Fuzzing section).
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: std::panic::set_hook(Box::new(|_| {})),
    |data: &[u8]| sluice_fuzz::stage_plan(data)
);
