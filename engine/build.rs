//! Link settings for the `sluice` binary.

fn main() {
    // A fixed-address (non-PIE) executable: as a position-independent one, every process start
    // (the driver and each executor) spent about 5 ms applying ~250 000 load-time relocations
    // and copying the pages they touch. Libraries, heap and stacks stay randomized.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
