//! The workspace keeps DESIGN.md's dependency direction: `net` and `checkpoint` are leaves,
//! `connectors` may use only `checkpoint`, and only `engine` has a binary (besides the fuzz
//! targets of `sluice-fuzz`, which are libFuzzer harnesses, not programs).

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
        .current_dir(sluice::repo_root())
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
            if t["kind"].as_array().unwrap().iter().any(|k| k == "bin") && name != "sluice-fuzz" {
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
        deps.iter().all(|(k, v)| k == "sluice"
            || k == "sluice-fuzz"
            || !v.contains(&"sluice-engine".to_string())),
        "nothing but the root package and the fuzz targets import engine"
    );
    assert_eq!(
        bins,
        vec!["sluice-engine".to_string()],
        "only engine has a binary"
    );
}

/// No Rust source file of the workspace grows past 800 lines: split it before it gets there.
/// (`vendor/` holds third-party crates, patched, not ours to split.)
#[test]
fn no_source_file_is_over_800_lines() {
    let root = sluice::repo_root();
    let mut long = Vec::new();
    let mut seen = 0;
    let skipped = |e: &walkdir::DirEntry| {
        let name = e.file_name().to_string_lossy();
        e.depth() > 0
            && e.file_type().is_dir()
            && (name.starts_with('.')
                || name == "target"
                || name == "out"
                || (e.depth() == 1 && name == "vendor"))
    };
    for entry in walkdir::WalkDir::new(&root)
        .into_iter()
        .filter_entry(|e| !skipped(e))
    {
        let entry = entry.unwrap();
        if entry.file_type().is_file() && entry.file_name().to_string_lossy().ends_with(".rs") {
            seen += 1;
            let lines = std::fs::read_to_string(entry.path())
                .unwrap()
                .lines()
                .count();
            if lines > 800 {
                long.push(format!("{} ({lines} lines)", entry.path().display()));
            }
        }
    }
    assert!(
        seen > 50,
        "only {seen} .rs files found under {}",
        root.display()
    );
    assert!(long.is_empty(), "files over 800 lines: {long:?}");
}

/// The engine's top-level modules (`engine/src/NAME.rs` or `engine/src/NAME/`) and, for each,
/// the other top-level modules its code names through `crate::` paths (comments aside).
fn engine_module_imports() -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = sluice::repo_root().join("engine/src");
    let mut modules: BTreeMap<String, Vec<std::path::PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut files = Vec::new();
            let mut stack = vec![path];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).unwrap().flatten() {
                    if e.path().is_dir() {
                        stack.push(e.path());
                    } else if e.path().extension().is_some_and(|x| x == "rs") {
                        files.push(e.path());
                    }
                }
            }
            modules.entry(name).or_default().extend(files);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            if stem != "lib" && stem != "main" {
                modules.entry(stem.to_string()).or_default().push(path);
            }
        }
    }
    let names: Vec<String> = modules.keys().cloned().collect();
    modules
        .into_iter()
        .map(|(module, files)| {
            let mut uses = std::collections::BTreeSet::new();
            for file in files {
                for line in std::fs::read_to_string(&file).unwrap().lines() {
                    let code = line.trim_start();
                    if code.starts_with("//") {
                        continue;
                    }
                    for (i, _) in code.match_indices("crate::") {
                        let rest = &code[i + "crate::".len()..];
                        let target: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if target != module && names.contains(&target) {
                            uses.insert(target);
                        }
                    }
                }
            }
            (module, uses)
        })
        .collect()
}

/// DESIGN.md's layers inside `engine`: no import cycle between its modules, and the driver
/// imports nothing from the executor (they are siblings over `protocol`).
#[test]
fn engine_modules_form_no_cycle_and_the_driver_imports_no_executor_code() {
    let graph = engine_module_imports();
    assert!(
        !graph["driver"].contains("executor"),
        "driver imports from executor: {:?}",
        graph["driver"]
    );
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = path.iter().position(|n| n == node) {
            panic!(
                "import cycle between engine modules: {} -> {node}",
                path[at..].join(" -> ")
            );
        }
        path.push(node.to_string());
        for next in &graph[node] {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut done = std::collections::BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
    // The detector itself: a made-up cycle is found.
    let mut cyclic = graph.clone();
    cyclic
        .get_mut("protocol")
        .unwrap()
        .insert("driver".to_string());
    let found = std::panic::catch_unwind(|| {
        let mut done = std::collections::BTreeSet::new();
        for node in cyclic.keys() {
            visit(node, &cyclic, &mut Vec::new(), &mut done);
        }
    });
    assert!(
        found.is_err(),
        "a cycle through protocol -> driver went unnoticed"
    );
}
