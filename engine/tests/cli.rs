//! The `sluice` command line itself: help, cluster credentials.
//! (Having an integration test here also makes `cargo test --workspace` build the binary that
//! the end-to-end tests in the root package run.)

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

#[test]
fn help_lists_the_commands() {
    let out = sluice().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "run",
        "driver",
        "executor",
        "explain",
        "cluster",
        "checkpoint",
    ] {
        assert!(text.contains(cmd), "{cmd} missing from:\n{text}");
    }
}

#[test]
fn cluster_init_writes_a_private_ca_key_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    let out = sluice()
        .args(["cluster", "init"])
        .arg(&cluster)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(cluster.join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(cluster.join("ca.crt").exists());
    let before = std::fs::read(cluster.join("ca.key")).unwrap();
    let again = sluice()
        .args(["cluster", "init"])
        .arg(&cluster)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    assert_eq!(before, std::fs::read(cluster.join("ca.key")).unwrap());
}
