//! Applying the configuration layers to a command line (see `sluice_engine::config`): the
//! file, `SLUICE_*` variables and the job's `SET` statements become arguments placed before the
//! user's own, so clap validates every value as it would a flag.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context};
use sluice_engine::config;
use sluice_engine::job::{Job, JobText};

/// Index of the subcommand in `args` (the first word that is neither an option nor the value
/// of `--config`).
pub(crate) fn subcommand_position(args: &[OsString]) -> Option<usize> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--config" {
            i += 2;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            return Some(i);
        }
    }
    None
}

/// The value of `--config FILE` / `--config=FILE` (before any `--`).
pub(crate) fn config_flag(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().take_while(|a| a.as_os_str() != "--");
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// Parses `before NAME [layers] user` with every configuration layer for command `name`; returns
/// the matches, the layered values and the job (whose `SET` statements are a layer).
pub(crate) fn layered(
    root: &clap::Command,
    before: &[OsString],
    name: &str,
    user: &[OsString],
    explicit: Option<PathBuf>,
) -> anyhow::Result<(clap::ArgMatches, Vec<config::Value>, Option<Job>)> {
    let mut layers = Vec::new();
    if let Some(path) = config::config_path(explicit) {
        let file = config::ConfigFile::read(&path, root).map_err(anyhow::Error::msg)?;
        layers.extend(file.values(root, name));
    }
    layers.extend(config::env_values(root, name, |v| std::env::var(v).ok()));
    let parse = |layers: &[config::Value]| -> anyhow::Result<clap::ArgMatches> {
        let mut argv = before.to_vec();
        argv.push(name.into());
        argv.extend(config::arguments(root, name, layers));
        argv.extend_from_slice(user);
        match root.clone().try_get_matches_from(argv) {
            Ok(m) => Ok(m),
            Err(e) => match blame(&e, layers, user) {
                // A bad value from the configuration: say where it came from.
                Some(v) => {
                    let text = e.to_string();
                    let first = text.lines().next().unwrap_or_default();
                    bail!(
                        "{}: {} = '{}': {}",
                        v.source,
                        v.key,
                        v.value,
                        first.trim_start_matches("error: ")
                    )
                }
                None => e.exit(),
            },
        }
    };
    let mut matches = parse(&layers)?;
    let job = match matches.subcommand_matches(name) {
        Some(sub) => job_text(sub)?.map(Job::parse).transpose()?,
        None => None,
    };
    if let Some(job) = &job {
        if !job.settings.is_empty() {
            layers
                .extend(config::job_values(root, name, &job.settings).map_err(anyhow::Error::msg)?);
            matches = parse(&layers)?;
        }
    }
    Ok((matches, layers, job))
}

/// The layered value a clap error is about, if the user's own arguments did not give it.
pub(crate) fn blame<'a>(
    e: &clap::Error,
    layers: &'a [config::Value],
    user: &[OsString],
) -> Option<&'a config::Value> {
    let clap::error::ContextValue::String(arg) = e.get(clap::error::ContextKind::InvalidArg)?
    else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    if config::given_as_flag(user, long) {
        return None;
    }
    let key = long.replace('-', "_");
    layers.iter().rev().find(|v| v.key == key)
}

/// The job a command's matches name: a file's text or `-e` SQL.
pub(crate) fn job_text(sub: &clap::ArgMatches) -> anyhow::Result<Option<JobText>> {
    let file = sub.try_get_one::<PathBuf>("job").ok().flatten();
    let inline = sub.try_get_one::<String>("execute").ok().flatten();
    Ok(match (file, inline) {
        (Some(path), _) => Some(JobText {
            origin: path.display().to_string(),
            text: std::fs::read_to_string(path)
                .with_context(|| format!("reading job file {}", path.display()))?,
        }),
        (None, Some(sql)) => Some(JobText {
            origin: "query".into(),
            text: sql.clone(),
        }),
        (None, None) => None,
    })
}

/// `sluice config show COMMAND ARGS...`: one line per option — key, value, source.
pub(crate) fn show_config(
    root: &clap::Command,
    explicit: Option<PathBuf>,
    command: &str,
    args: &[OsString],
) -> anyhow::Result<()> {
    let explicit = explicit.or_else(|| config_flag(args));
    let file = config::config_path(explicit.clone());
    let before = [OsString::from("sluice")];
    let (matches, layers, _) = layered(root, &before, command, args, explicit)?;
    let sub = matches
        .subcommand_matches(command)
        .context("internal: no matches for the command")?;
    let rows = config::effective(root, command, sub, &layers, args);
    match &file {
        Some(f) => println!("# sluice {command}; configuration file {}", f.display()),
        None => println!("# sluice {command}; no configuration file"),
    }
    let key_width = rows.iter().map(|r| r.key.len()).max().unwrap_or(0);
    let values: Vec<String> = rows
        .iter()
        .map(|r| r.value.clone().unwrap_or_else(|| "(unset)".into()))
        .collect();
    let value_width = values.iter().map(|v| v.len()).max().unwrap_or(0);
    for (row, value) in rows.iter().zip(&values) {
        println!(
            "{:key_width$}  {:value_width$}  {}",
            row.key, value, row.source
        );
    }
    Ok(())
}
