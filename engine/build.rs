//! Link settings for the `sluice` binary, and build facts for `sluice --version`: the commit it
//! was built from (`git rev-parse`, or `$SLUICE_COMMIT` when building outside a git checkout)
//! and the build profile.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    // A fixed-address (non-PIE) executable: as a position-independent one, every process start
    // (the driver and each executor) spent about 5 ms applying ~250 000 load-time relocations
    // and copying the pages they touch. Libraries, heap and stacks stay randomized.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SLUICE_COMMIT");
    let commit = std::env::var("SLUICE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SLUICE_COMMIT={commit}");
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=SLUICE_PROFILE={profile}");
    // Run again when HEAD moves: HEAD itself, the branch it points to, packed refs (only files
    // that exist; a missing one would rerun this script on every build). Paths relative to this
    // package, so that another checkout sharing the target directory watches its own.
    if let Some(dir) = git(&["rev-parse", "--path-format=relative", "--git-dir"]) {
        let dir = Path::new(&dir);
        let mut watch = vec![dir.join("HEAD"), dir.join("packed-refs")];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(dir.join(branch));
        }
        for path in watch.into_iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
