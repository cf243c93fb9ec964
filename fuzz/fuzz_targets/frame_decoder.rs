//! libFuzzer harness for [`sluice_fuzz::frame_decoder`]: arbitrary bytes, in arbitrary chunks,
//! fed to the control-frame decoder with the engine's real message types must give messages or
//! errors — never a panic, never an allocation past the frame limit.
//!
//! Run: `cargo +nightly fuzz run frame_decoder -- -runs=10000000`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::frame_decoder(data));
