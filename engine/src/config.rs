//! Layered configuration of the `sluice` command line.
//!
//! Every option of `run`, `driver`, `executor` and `explain` can come from four places, each
//! overriding the one before:
//!
//! 1. a TOML file (`--config FILE`, `$SLUICE_CONFIG`, or `~/.config/sluice/sluice.toml` when it
//!    exists): top-level keys apply to every command that has the option, a `[run]`,
//!    `[driver]`, `[executor]` or `[explain]` table to that command only (and wins over the
//!    top level);
//! 2. `SLUICE_<KEY>` environment variables;
//! 3. the job's `SET key = value;` statements;
//! 4. flags.
//!
//! A key is an option's long flag with `_` for `-` (`heartbeat_timeout` for
//! `--heartbeat-timeout`). The layers are applied as command-line arguments placed before the
//! user's own, parsed by the command's own clap definition with `args_override_self` (the last
//! occurrence of an option wins): a value from a file is validated and converted exactly as the
//! same value given as a flag would be, with the same error text.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::{Arg, Command};

/// The commands whose options can be configured.
pub const COMMANDS: [&str; 4] = ["run", "driver", "executor", "explain"];

/// The environment variable naming the configuration file.
pub const CONFIG_VAR: &str = "SLUICE_CONFIG";

/// Where an effective value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The option's built-in default.
    Default,
    /// A configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A `SET` statement of the job (`file:line:column`).
    Job(String),
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Job(at) => write!(f, "SET at {at}"),
            Source::Flag => f.write_str("flag"),
        }
    }
}

/// One value of one layer.
#[derive(Clone, Debug)]
pub struct Value {
    pub key: String,
    pub value: String,
    pub source: Source,
}

/// A job's `SET key = value;` statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSetting {
    pub key: String,
    pub value: String,
    /// `file:line:column` of the statement.
    pub location: String,
}

/// The configuration key of an option.
pub fn key_of(arg: &Arg) -> Option<String> {
    let long = arg.get_long()?;
    if arg.is_hide_set()
        || arg.is_positional()
        || matches!(long, "help" | "version" | "execute" | "config")
    {
        return None;
    }
    Some(long.replace('-', "_"))
}

/// The environment variable of a key.
pub fn env_var(key: &str) -> String {
    format!("SLUICE_{}", key.to_ascii_uppercase())
}

/// The configurable options of `command`, by key.
pub fn options(command: &Command) -> BTreeMap<String, &Arg> {
    command
        .get_arguments()
        .filter_map(|a| key_of(a).map(|k| (k, a)))
        .collect()
}

/// Every key some configurable command has, sorted.
fn all_keys(root: &Command) -> Vec<String> {
    let mut keys: Vec<String> = root
        .get_subcommands()
        .filter(|c| COMMANDS.contains(&c.get_name()))
        .flat_map(|c| options(c).into_keys())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn subcommand<'a>(root: &'a Command, name: &str) -> &'a Command {
    root.find_subcommand(name)
        .unwrap_or_else(|| panic!("`{name}` is a subcommand"))
}

/// A parsed configuration file.
#[derive(Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    table: toml::Table,
}

impl ConfigFile {
    /// Reads and checks `path`: every key must be an option of some configurable command (of
    /// that command, inside its table), every value a string, number or boolean.
    pub fn read(path: &Path, root: &Command) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading the configuration file {}: {e}", path.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("{}: {e}", path.display()))?;
        let known = all_keys(root);
        for (key, value) in &table {
            match value {
                toml::Value::Table(inner) => {
                    if !COMMANDS.contains(&key.as_str()) {
                        return Err(format!(
                            "{}: unknown table [{key}]; tables: [run], [driver], [executor], [explain]",
                            path.display()
                        ));
                    }
                    let own = options(subcommand(root, key));
                    for (k, v) in inner {
                        if !own.contains_key(&normalise(k)) {
                            return Err(format!(
                                "{}: unknown key '{k}' in [{key}]; `sluice {key}` has: {}",
                                path.display(),
                                own.keys().cloned().collect::<Vec<_>>().join(", ")
                            ));
                        }
                        scalar(v).map_err(|m| format!("{}: [{key}] {k}: {m}", path.display()))?;
                    }
                }
                other => {
                    if !known.contains(&normalise(key)) {
                        return Err(format!(
                            "{}: unknown key '{key}'; known keys: {}",
                            path.display(),
                            known.join(", ")
                        ));
                    }
                    scalar(other).map_err(|m| format!("{}: {key}: {m}", path.display()))?;
                }
            }
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            table,
        })
    }

    /// The file's values for `command`: top-level keys it has, then its own table's.
    pub fn values(&self, root: &Command, command: &str) -> Vec<Value> {
        let own = options(subcommand(root, command));
        let mut out = Vec::new();
        let mut push = |k: &str, v: &toml::Value| {
            let key = normalise(k);
            if own.contains_key(&key) {
                if let Ok(value) = scalar(v) {
                    out.push(Value {
                        key,
                        value,
                        source: Source::File(self.path.clone()),
                    });
                }
            }
        };
        for (k, v) in &self.table {
            if !v.is_table() {
                push(k, v);
            }
        }
        if let Some(toml::Value::Table(inner)) = self.table.get(command) {
            for (k, v) in inner {
                push(k, v);
            }
        }
        out
    }
}

fn normalise(key: &str) -> String {
    key.replace('-', "_")
}

fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "expected a string, number or boolean, found {}",
            other.type_str()
        )),
    }
}

/// The configuration file to read: `explicit` (`--config`), else `$SLUICE_CONFIG`, else
/// `$XDG_CONFIG_HOME/sluice/sluice.toml` or `~/.config/sluice/sluice.toml` if it exists. An
/// explicit or `$SLUICE_CONFIG` file must exist.
pub fn config_path(explicit: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p);
    }
    if let Some(p) = std::env::var_os(CONFIG_VAR).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let dir = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))?;
    let default = dir.join("sluice").join("sluice.toml");
    default.is_file().then_some(default)
}

/// The `SLUICE_<KEY>` variables set for `command`'s options.
pub fn env_values(
    root: &Command,
    command: &str,
    vars: impl Fn(&str) -> Option<String>,
) -> Vec<Value> {
    options(subcommand(root, command))
        .into_keys()
        .filter_map(|key| {
            let var = env_var(&key);
            vars(&var).map(|value| Value {
                key,
                value,
                source: Source::Env(var),
            })
        })
        .collect()
}

/// The job's `SET` values for `command`; a key no configurable command has is an error naming
/// the statement.
pub fn job_values(
    root: &Command,
    command: &str,
    settings: &[JobSetting],
) -> Result<Vec<Value>, String> {
    let own = options(subcommand(root, command));
    let known = all_keys(root);
    let mut out = Vec::new();
    for s in settings {
        let key = normalise(&s.key.to_ascii_lowercase());
        if !known.contains(&key) {
            return Err(format!(
                "{}: SET {}: unknown key; known keys: {}",
                s.location,
                s.key,
                known.join(", ")
            ));
        }
        if own.contains_key(&key) {
            out.push(Value {
                key,
                value: s.value.clone(),
                source: Source::Job(s.location.clone()),
            });
        }
    }
    Ok(out)
}

/// The arguments that apply `values` (in order) to `command`, to be placed before the user's.
pub fn arguments(root: &Command, command: &str, values: &[Value]) -> Vec<OsString> {
    let own = options(subcommand(root, command));
    values
        .iter()
        .filter_map(|v| {
            let arg = own.get(&v.key)?;
            Some(OsString::from(format!(
                "--{}={}",
                arg.get_long().expect("options have long flags"),
                v.value
            )))
        })
        .collect()
}

/// Whether the user's own arguments give the option with this long flag.
pub fn given_as_flag(user_args: &[OsString], long: &str) -> bool {
    let flag = format!("--{long}");
    let with_value = format!("--{long}=");
    user_args
        .iter()
        .take_while(|a| a.as_os_str() != "--")
        .filter_map(|a| a.to_str())
        .any(|a| a == flag || a.starts_with(&with_value))
}

/// One row of `sluice config show`.
#[derive(Debug, PartialEq, Eq)]
pub struct Effective {
    pub key: String,
    /// `None`: unset (the option has no default and nothing gave it).
    pub value: Option<String>,
    pub source: Source,
}

/// The effective value of every option of `command` and its source, given the layered values
/// and the user's arguments, from the matches of the final parse.
pub fn effective(
    root: &Command,
    command: &str,
    matches: &clap::ArgMatches,
    layered: &[Value],
    user_args: &[OsString],
) -> Vec<Effective> {
    options(subcommand(root, command))
        .into_iter()
        .map(|(key, arg)| {
            let id = arg.get_id().as_str();
            let value = matches
                .get_raw(id)
                .and_then(|mut v| v.next_back())
                .map(|v| v.to_string_lossy().into_owned());
            let long = arg.get_long().unwrap_or_default();
            let source = if given_as_flag(user_args, long) {
                Source::Flag
            } else if let Some(v) = layered.iter().rev().find(|v| v.key == key) {
                v.source.clone()
            } else {
                Source::Default
            };
            Effective { key, value, source }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{ArgAction, Parser, Subcommand};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Subcommand, Debug)]
    enum Cmd {
        Run {
            job: Option<String>,
            #[arg(long, default_value_t = 2)]
            executors: usize,
            #[arg(long)]
            checkpoint: Option<String>,
            #[arg(long, default_value = "10s")]
            heartbeat_timeout: String,
            #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
                  default_value_t = false, action = ArgAction::Set)]
            no_fsync: bool,
        },
        Driver {
            #[arg(long)]
            checkpoint: Option<String>,
            #[arg(long)]
            listen: Option<String>,
        },
        Executor {
            #[arg(long, default_value_t = 1024)]
            memory_mb: u64,
        },
        Explain {
            #[arg(long, default_value_t = 2)]
            parallelism: usize,
        },
    }

    fn root() -> Command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        for name in COMMANDS {
            cmd = cmd.mut_subcommand(name, |s| s.args_override_self(true));
        }
        cmd
    }

    fn file(text: &str) -> Result<ConfigFile, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, text).unwrap();
        ConfigFile::read(&path, &root())
    }

    /// Layers applied as arguments, then the user's; returns the effective table.
    fn resolve(layers: Vec<Value>, user: &[&str]) -> Vec<Effective> {
        let root = root();
        let user: Vec<OsString> = user.iter().map(OsString::from).collect();
        let mut argv = vec![OsString::from("sluice"), OsString::from("run")];
        argv.extend(arguments(&root, "run", &layers));
        argv.extend(user.iter().cloned());
        let matches = root.clone().try_get_matches_from(argv).unwrap();
        let (_, sub) = matches.subcommand().unwrap();
        effective(&root, "run", sub, &layers, &user)
    }

    fn row<'a>(rows: &'a [Effective], key: &str) -> &'a Effective {
        rows.iter().find(|r| r.key == key).unwrap()
    }

    #[test]
    fn file_then_env_then_set_then_flag() {
        let f = file(
            "executors = 5\ncheckpoint = '/file'\nheartbeat_timeout = '3s'\nno_fsync = true\n\
             [driver]\nlisten = '0.0.0.0:1'\n[run]\nexecutors = 6\n",
        )
        .unwrap();
        let mut layers = f.values(&root(), "run");
        layers.extend(env_values(&root(), "run", |v| {
            (v == "SLUICE_CHECKPOINT").then(|| "/env".to_string())
        }));
        layers.extend(
            job_values(
                &root(),
                "run",
                &[JobSetting {
                    key: "heartbeat_timeout".into(),
                    value: "4s".into(),
                    location: "job.sql:1:1".into(),
                }],
            )
            .unwrap(),
        );
        let rows = resolve(layers.clone(), &["--no-fsync=false"]);
        // [run] wins over the top level of the same file.
        assert_eq!(row(&rows, "executors").value.as_deref(), Some("6"));
        assert!(matches!(row(&rows, "executors").source, Source::File(_)));
        assert_eq!(row(&rows, "checkpoint").value.as_deref(), Some("/env"));
        assert_eq!(
            row(&rows, "checkpoint").source,
            Source::Env("SLUICE_CHECKPOINT".into())
        );
        assert_eq!(row(&rows, "heartbeat_timeout").value.as_deref(), Some("4s"));
        assert_eq!(
            row(&rows, "heartbeat_timeout").source,
            Source::Job("job.sql:1:1".into())
        );
        assert_eq!(row(&rows, "no_fsync").value.as_deref(), Some("false"));
        assert_eq!(row(&rows, "no_fsync").source, Source::Flag);
        // A flag beats everything; a bare boolean flag means true.
        let rows = resolve(layers, &["--checkpoint", "/flag", "--executors=7"]);
        assert_eq!(row(&rows, "checkpoint").value.as_deref(), Some("/flag"));
        assert_eq!(row(&rows, "checkpoint").source, Source::Flag);
        assert_eq!(row(&rows, "executors").value.as_deref(), Some("7"));
        assert_eq!(row(&rows, "no_fsync").value.as_deref(), Some("true"));
        let rows = resolve(Vec::new(), &["--no-fsync"]);
        assert_eq!(row(&rows, "no_fsync").value.as_deref(), Some("true"));
        // Nothing given: defaults, and unset options.
        let rows = resolve(Vec::new(), &[]);
        assert_eq!(row(&rows, "executors").value.as_deref(), Some("2"));
        assert_eq!(row(&rows, "executors").source, Source::Default);
        assert_eq!(row(&rows, "checkpoint").value, None);
    }

    #[test]
    fn unknown_keys_are_errors_that_list_the_known_ones() {
        let err = file("exectors = 3\n").unwrap_err();
        assert!(
            err.contains("unknown key 'exectors'")
                && err.contains("known keys: checkpoint, executors, heartbeat_timeout"),
            "{err}"
        );
        let err = file("[executor]\nlisten = 'x'\n").unwrap_err();
        assert!(
            err.contains("unknown key 'listen' in [executor]; `sluice executor` has: memory_mb"),
            "{err}"
        );
        let err = file("[worker]\nx = 1\n").unwrap_err();
        assert!(err.contains("unknown table [worker]"), "{err}");
        let err = file("executors = [1]\n").unwrap_err();
        assert!(
            err.contains("executors: expected a string, number or boolean, found array"),
            "{err}"
        );
        let err = file("executors = \n").unwrap_err();
        assert!(
            err.contains("sluice.toml") && err.contains("line 1"),
            "{err}"
        );
        let err = job_values(
            &root(),
            "run",
            &[JobSetting {
                key: "paralelism".into(),
                value: "4".into(),
                location: "job.sql:2:1".into(),
            }],
        )
        .unwrap_err();
        assert!(
            err.starts_with("job.sql:2:1: SET paralelism: unknown key; known keys: "),
            "{err}"
        );
    }

    #[test]
    fn keys_of_other_commands_are_ignored_and_bad_values_fail_like_flags() {
        // `listen` is a driver option: valid at the top level, not applied to `run`.
        let f = file("listen = '0.0.0.0:9'\nexecutors = 'many'\n").unwrap();
        let layers = f.values(&root(), "run");
        assert_eq!(layers.len(), 1);
        let mut argv = vec![OsString::from("sluice"), OsString::from("run")];
        argv.extend(arguments(&root(), "run", &layers));
        let err = root().try_get_matches_from(argv).unwrap_err().to_string();
        assert!(
            err.contains("invalid value 'many' for '--executors"),
            "{err}"
        );
    }

    #[test]
    fn flags_are_recognised_only_before_a_double_dash() {
        let args: Vec<OsString> = ["--executors=3", "--", "--checkpoint"]
            .iter()
            .map(OsString::from)
            .collect();
        assert!(given_as_flag(&args, "executors"));
        assert!(!given_as_flag(&args, "checkpoint"));
        assert_eq!(env_var("heartbeat_timeout"), "SLUICE_HEARTBEAT_TIMEOUT");
    }
}
