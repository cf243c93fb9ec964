//! Configuration and logs as an operator meets them: a TOML file, `SLUICE_*` variables, the
//! job's `SET` statements and flags, in that order of precedence, shown by `sluice config show`
//! and applied to a real run; unknown keys rejected with the known ones listed; logs as JSON
//! objects with the task's context, and no terminal colours in a log file.

mod common;

use common::*;
use std::path::Path;

/// A bounded job on the built-in Nexmark generator (no input files needed).
const JOB: &str = "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', events = '3000');\n\
                   SELECT auction % 4 AS a, count(*) AS n FROM bid GROUP BY auction % 4;\n";

/// `sluice config show` as rows: key → (value, source).
fn show(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Vec<(String, String, String)> {
    let mut all = vec!["config", "show"];
    all.extend_from_slice(args);
    let out = ok(&sluice_env(dir, &all, env));
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let key = parts.next().unwrap().to_string();
            let value = parts.next().unwrap().to_string();
            let source = parts.collect::<Vec<_>>().join(" ");
            (key, value, source)
        })
        .collect()
}

fn get<'a>(rows: &'a [(String, String, String)], key: &str) -> (&'a str, &'a str) {
    let (_, v, s) = rows
        .iter()
        .find(|(k, _, _)| k == key)
        .unwrap_or_else(|| panic!("no row {key} in {rows:?}"));
    (v, s)
}

#[test]
fn file_then_environment_then_set_then_flag() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("sluice.toml"),
        "retain_epochs = 11\nmax_task_attempts = 5\nmax_result_rows = 7\ntrigger = '2s'\n\
         [run]\nexecutors = 3\n[executor]\nrejoin_timeout_secs = 9\n",
    )
    .unwrap();
    std::fs::write(
        d.join("job.sql"),
        format!("SET max_result_rows = 2;\nSET trigger = '300ms';\n{JOB}"),
    )
    .unwrap();
    let env = [
        ("SLUICE_MAX_TASK_ATTEMPTS", "6"),
        ("SLUICE_MAX_RESULT_ROWS", "8"),
        ("SLUICE_TRIGGER", "1s"),
    ];
    let rows = show(
        d,
        &["run", "job.sql", "--config", "sluice.toml", "--trigger=5s"],
        &env,
    );
    let file = format!("file {}", "sluice.toml");
    assert_eq!(get(&rows, "retain_epochs"), ("11", file.as_str()));
    assert_eq!(get(&rows, "executors"), ("3", file.as_str()));
    assert_eq!(
        get(&rows, "max_task_attempts"),
        ("6", "env SLUICE_MAX_TASK_ATTEMPTS")
    );
    assert_eq!(get(&rows, "max_result_rows"), ("2", "SET at job.sql:1:5"));
    assert_eq!(get(&rows, "trigger"), ("5s", "flag"));
    assert_eq!(get(&rows, "heartbeat_timeout"), ("10s", "default"));
    // The [executor] table applies to executors only.
    let executor = show(
        d,
        &[
            "executor",
            "--config",
            "sluice.toml",
            "--driver",
            "h:1",
            "--cluster-dir",
            "c",
        ],
        &[],
    );
    assert_eq!(get(&executor, "rejoin_timeout_secs"), ("9", file.as_str()));
    assert!(!executor.iter().any(|(k, _, _)| k == "retain_epochs"));

    // The same layers govern a real run: SET wins over the file and the variable, so two of
    // the four result rows are printed; SET events = ... writes the events file.
    std::fs::write(
        d.join("job.sql"),
        format!("SET max_result_rows = 2;\nSET events = 'events.jsonl';\n{JOB}"),
    )
    .unwrap();
    let out = ok(&sluice_env(
        d,
        &[
            "run",
            "job.sql",
            "--config",
            "sluice.toml",
            "--executors",
            "1",
        ],
        &env,
    ));
    assert!(out.contains("2 of 4 rows shown"), "{out}");
    assert!(!events(&d.join("events.jsonl")).is_empty());
}

#[test]
fn the_default_file_is_read_from_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("xdg/sluice")).unwrap();
    std::fs::write(d.join("xdg/sluice/sluice.toml"), "max_epochs = 4\n").unwrap();
    let xdg = d.join("xdg");
    let rows = show(
        d,
        &["run", "-e", "SELECT 1"],
        &[("XDG_CONFIG_HOME", xdg.to_str().unwrap())],
    );
    let expected = format!("file {}", xdg.join("sluice/sluice.toml").display());
    assert_eq!(get(&rows, "max_epochs"), ("4", expected.as_str()));
}

#[test]
fn unknown_keys_and_bad_values_are_errors_naming_where_they_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("job.sql"), JOB).unwrap();
    std::fs::write(d.join("bad.toml"), "executor = 2\n").unwrap();
    let err = fails(&sluice(d, &["run", "job.sql", "--config", "bad.toml"]));
    assert!(
        err.contains("bad.toml: unknown key 'executor'; known keys: ")
            && err.contains("executors")
            && err.contains("heartbeat_timeout"),
        "{err}"
    );
    std::fs::write(d.join("bad.toml"), "[run]\nlisten = '0.0.0.0:1'\n").unwrap();
    let err = fails(&sluice(d, &["run", "job.sql", "--config", "bad.toml"]));
    assert!(
        err.contains("unknown key 'listen' in [run]; `sluice run` has: "),
        "{err}"
    );
    std::fs::write(d.join("bad.toml"), "heartbeat_timeout = 'soon'\n").unwrap();
    let err = fails(&sluice(d, &["run", "job.sql", "--config", "bad.toml"]));
    assert!(
        err.contains("file bad.toml: heartbeat_timeout = 'soon': ")
            && err.contains("'soon' is not a duration"),
        "{err}"
    );
    let err = fails(&sluice_env(
        d,
        &["run", "job.sql"],
        &[("SLUICE_EXECUTORS", "several")],
    ));
    assert!(
        err.contains("env SLUICE_EXECUTORS: executors = 'several': "),
        "{err}"
    );
    std::fs::write(d.join("job.sql"), format!("SET paralelism = 4;\n{JOB}")).unwrap();
    let err = fails(&sluice(d, &["run", "job.sql"]));
    assert!(
        err.contains("job.sql:1:5: SET paralelism: unknown key; known keys: ")
            && err.contains("parallelism"),
        "{err}"
    );
}

#[test]
fn json_logs_carry_the_task_context_and_text_logs_to_a_file_have_no_colours() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("job.sql"), JOB).unwrap();
    let out = sluice_env(
        d,
        &["run", "job.sql", "--executors", "1"],
        &[
            ("SLUICE_LOG", "sluice_engine=debug"),
            ("SLUICE_LOG_FORMAT", "json"),
        ],
    );
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let task = lines
        .iter()
        .find(|l| l["message"] == "task finished")
        .unwrap_or_else(|| panic!("no task event in {stderr}"));
    assert_eq!(task["level"], "DEBUG");
    assert_eq!(task["span"]["epoch"], 0);
    assert!(task["span"]["stage"].is_u64() && task["span"]["partition"].is_u64());
    assert_eq!(task["span"]["executor"], "executor-1");
    assert!(lines
        .iter()
        .any(|l| l["message"] == "scheduling epoch" && l["span"]["epoch"] == 0));

    // Text logs with stderr on a file (as `2> run.log`): no escape codes.
    let log = d.join("run.log");
    let status = std::process::Command::new(sluice::sluice_binary())
        .args(["run", "job.sql", "--executors", "1"])
        .current_dir(d)
        .env("SLUICE_LOG", "sluice_engine=debug")
        .env("XDG_CONFIG_HOME", d.join(".no-config"))
        .env_remove("SLUICE_LOG_FORMAT")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("task finished"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape codes in {stderr:?}");
}

#[test]
fn version_completions_and_manual_page() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let version = ok(&sluice(d, &["--version"]));
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(sluice::repo_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    assert!(version.starts_with("sluice 0.1.0 (commit "), "{version}");
    if let Some(commit) = commit {
        // Built from this checkout (HEAD may have moved since the build only by a commit the
        // build script has seen: cargo reruns it when HEAD changes).
        assert!(version.contains(&commit), "{version} vs HEAD {commit}");
    }
    assert!(
        version.contains(" debug build)") || version.contains(" release build)"),
        "{version}"
    );
    let bash = ok(&sluice(d, &["completions", "bash"]));
    assert!(
        bash.contains("_sluice()") && bash.contains("--heartbeat-timeout"),
        "{bash}"
    );
    let man = ok(&sluice(d, &["man"]));
    assert!(
        man.starts_with(".ie") || man.contains(".TH sluice"),
        "{}",
        &man[..200.min(man.len())]
    );
}

/// The README's configuration table names every key of every configurable command, with the
/// commands that have it, its flag and its variable.
#[test]
fn the_readme_names_every_configuration_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let commands: [(&str, &[&str]); 4] = [
        ("run", &["-e", "SELECT 1"]),
        ("driver", &["-e", "SELECT 1", "--cluster-dir", "c"]),
        ("executor", &["--driver", "h:1", "--cluster-dir", "c"]),
        ("explain", &["-e", "SELECT 1"]),
    ];
    let mut actual: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (command, args) in commands {
        let mut all = vec![command];
        all.extend_from_slice(args);
        for (key, _, _) in show(d, &all, &[]) {
            actual.entry(key).or_default().push(command.to_string());
        }
    }
    let readme = std::fs::read_to_string(sluice::repo_root().join("README.md")).unwrap();
    let section = readme
        .split("### Configuration")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .expect("a Configuration section");
    let mut documented: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let key = cells[1].trim_matches('`').to_string();
        let flag = format!("`--{}", key.replace('_', "-"));
        let var = format!("`SLUICE_{}`", key.to_uppercase());
        assert!(cells[3].starts_with(&flag), "{line}: flag should be {flag}");
        assert_eq!(cells[4], var, "{line}");
        documented.insert(key, cells[2].split(", ").map(String::from).collect());
    }
    assert_eq!(documented, actual);
}

#[test]
fn the_install_script_puts_completions_and_the_manual_page_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("prefix");
    let out = std::process::Command::new("bash")
        .arg(sluice::repo_root().join("scripts/install.sh"))
        .arg("--bin")
        .arg(sluice::sluice_binary())
        .env("PREFIX", &prefix)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let share = prefix.join("share");
    let bash = std::fs::read_to_string(share.join("bash-completion/completions/sluice")).unwrap();
    assert!(bash.contains("complete -F _sluice"), "{bash}");
    let zsh = std::fs::read_to_string(share.join("zsh/site-functions/_sluice")).unwrap();
    assert!(zsh.starts_with("#compdef sluice"), "{zsh}");
    assert!(share
        .join("fish/vendor_completions.d/sluice.fish")
        .is_file());
    let man = std::fs::read_to_string(share.join("man/man1/sluice.1")).unwrap();
    assert!(
        man.contains(".TH sluice 1"),
        "{}",
        &man[..300.min(man.len())]
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sluice 0.1.0 (commit "));
}
