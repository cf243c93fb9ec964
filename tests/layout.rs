//! The workspace keeps DESIGN.md's dependency direction: `net` and `checkpoint` are leaves,
//! `connectors` may use only `checkpoint`, and only `engine` has a binary.

use std::collections::BTreeMap;

#[test]
fn crate_dependencies_point_the_right_way() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let members: Vec<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut bins: Vec<String> = Vec::new();
    for p in packages {
        let name = p["name"].as_str().unwrap().to_string();
        let internal = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null()) // normal dependencies only
            .map(|d| d["name"].as_str().unwrap().to_string())
            .filter(|d| members.contains(d))
            .collect();
        deps.insert(name.clone(), internal);
        for t in p["targets"].as_array().unwrap() {
            if t["kind"].as_array().unwrap().iter().any(|k| k == "bin") {
                bins.push(name.clone());
            }
        }
    }
    assert_eq!(deps["sluice-net"], Vec::<String>::new(), "net is a leaf");
    assert_eq!(
        deps["sluice-checkpoint"],
        Vec::<String>::new(),
        "checkpoint is a leaf"
    );
    assert_eq!(
        deps["sluice-connectors"],
        vec!["sluice-checkpoint".to_string()]
    );
    assert!(
        deps.iter()
            .all(|(k, v)| k == "sluice" || !v.contains(&"sluice-engine".to_string())),
        "nothing but the root package imports engine"
    );
    assert_eq!(
        bins,
        vec!["sluice-engine".to_string()],
        "only engine has a binary"
    );
}

/// No Rust source file of the workspace grows past 800 lines: split it before it gets there.
#[test]
fn no_source_file_is_over_800_lines() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut long = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "out" {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                let lines = std::fs::read_to_string(&path).unwrap().lines().count();
                if lines > 800 {
                    long.push(format!("{} ({lines} lines)", path.display()));
                }
            }
        }
    }
    assert!(long.is_empty(), "files over 800 lines: {long:?}");
}
