//! The `sluice` command: run jobs, start drivers and executors, manage clusters and checkpoints.

mod cli;
mod layers;
mod output;

use std::ffi::OsString;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{CommandFactory, FromArgMatches};
use sluice_engine::config;
use sluice_engine::driver::{self, ClusterMode, DriverConfig};
use sluice_engine::executor::{self, ExecutorConfig};
use sluice_engine::job::Job;
use sluice_engine::ui::{Tee, Ui, UiOptions};

use cli::{CheckpointCommand, Cli, ClusterCommand, Command, ConfigCommand, DriverArgs};
use output::{check_checkpoint, inspect_checkpoint, print_report, Terminal};
use sluice_engine::EngineError;

/// mimalloc, as DataFusion's own CLI uses: Arrow allocates and frees buffers per batch, which
/// the system allocator handles markedly slower in fresh processes.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent huge pages off for this process and the executors it starts (the flag is
/// inherited), unless `MIMALLOC_ALLOW_THP` is set: the first touch of each 2 MiB region of a
/// huge-page heap zeroes — and may first compact memory for — a whole huge page. In a short job
/// that was up to a third of all CPU time, and its slowest runs. mimalloc is also built without
/// its `MADV_HUGEPAGE` requests (`no_thp`), which covers the allocations made before `main`;
/// this flag covers a system whose THP policy is `always`.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory map.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

fn main() {
    disable_transparent_huge_pages();
    let code = match resolve(std::env::args_os().collect()).and_then(|(cli, job)| {
        let json = log_format(&cli.command) == "json";
        init_logging(json);
        output::set_json_stderr(json);
        run(cli, job)
    }) {
        Ok(()) => 0,
        Err(e) => {
            if matches!(
                e.downcast_ref::<EngineError>(),
                Some(EngineError::Interrupted)
            ) {
                output::say("WARN", "sluice: interrupted; nothing was committed");
                130
            } else {
                output::say("ERROR", &format!("error: {e:#}"));
                1
            }
        }
    };
    tracing::trace!(target: "sluice::latency", code, "exiting");
    exit_now(code)
}

/// The CLI definition, with the last occurrence of an option winning in configurable commands
/// (configuration layers are passed as arguments before the user's; see `sluice_engine::config`).
fn cli_command() -> clap::Command {
    let mut cmd = Cli::command();
    for name in config::COMMANDS {
        cmd = cmd.mut_subcommand(name, |s| s.args_override_self(true));
    }
    cmd
}

/// The command line with the configuration applied — file < `SLUICE_*` environment < the job's
/// `SET` statements < flags — and the job it names, parsed once.
fn resolve(args: Vec<OsString>) -> anyhow::Result<(Cli, Option<Job>)> {
    let root = cli_command();
    let at = layers::subcommand_position(&args);
    let name = at
        .and_then(|i| args[i].to_str())
        .filter(|n| config::COMMANDS.contains(n));
    let (Some(at), Some(name)) = (at, name) else {
        let matches = root.get_matches_from(args);
        return Ok((Cli::from_arg_matches(&matches)?, None));
    };
    let explicit = layers::config_flag(&args[..]);
    if let Some(path) = &explicit {
        // Executors a local cluster starts read the same file.
        std::env::set_var(config::CONFIG_VAR, std::path::absolute(path)?);
    }
    let (matches, _, job) = layers::layered(&root, &args[..at], name, &args[at + 1..], explicit)?;
    Ok((Cli::from_arg_matches(&matches)?, job))
}

fn log_format(command: &Command) -> &str {
    match command {
        Command::Run { common, .. } | Command::Driver { common, .. } => &common.log.log_format,
        Command::Executor { log, .. } | Command::Explain { log, .. } => &log.log_format,
        _ => "text",
    }
}

/// Ends the process once its work is done and its output flushed, without the exit handlers:
/// they only tear down what the kernel reclaims anyway (RocksDB's static option tables, the
/// allocator's per-thread heaps, idle runtime threads) and cost milliseconds per process.
/// Everything that must reach the disk (checkpoint, sink files, the run directory's removal)
/// has been done and synced by then.
fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` ends the process; no Rust code runs after it.
    unsafe { libc::_exit(code) }
}

/// Logs to stderr, filtered by `SLUICE_LOG` (default `warn`): text, coloured only on a terminal,
/// or one JSON object per event whose `span` holds the fields of its context (epoch, stage,
/// partition, executor).
fn init_logging(json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn run(cli: Cli, job: Option<Job>) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            query: _,
            executors,
            min_executors,
            max_executors,
            slots,
            memory_mb,
            common,
        } => {
            let executors = min_executors.unwrap_or(executors);
            if executors == 0 {
                bail!("--executors must be at least 1");
            }
            let max_executors = max_executors.unwrap_or(executors);
            if max_executors < executors {
                bail!("--max-executors {max_executors} is below --min-executors {executors}");
            }
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            let slots = slots.unwrap_or_else(|| (cores / executors).max(1) as u32);
            let cluster = ClusterMode::Local {
                executors,
                max_executors,
                slots_per_executor: slots,
                memory_bytes: memory_mb * 1024 * 1024,
            };
            run_job(job, cluster, common)
        }
        Command::Driver {
            query: _,
            cluster_manager,
            listen,
            cluster_dir,
            min_executors,
            max_executors,
            register_timeout_secs,
            slots,
            memory_mb,
            k8s,
            common,
        } => {
            let min_executors = min_executors.max(1);
            let max_executors = max_executors.unwrap_or(min_executors);
            if max_executors < min_executors {
                bail!("--max-executors {max_executors} is below --min-executors {min_executors}");
            }
            let register_timeout = Duration::from_secs(register_timeout_secs);
            let cluster = if cluster_manager == "kubernetes" {
                if slots == 0 {
                    bail!("--slots must be at least 1");
                }
                let executor_env = k8s
                    .k8s_executor_env
                    .iter()
                    .map(|e| match e.split_once('=') {
                        Some((k, v)) => Ok((k.to_string(), v.to_string())),
                        None => std::env::var(e).map(|v| (e.clone(), v)).with_context(|| {
                            format!("--k8s-executor-env {e}: the driver has no ${e}")
                        }),
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                ClusterMode::Kubernetes {
                    executors: min_executors,
                    max_executors,
                    slots_per_executor: slots,
                    memory_bytes: memory_mb * 1024 * 1024,
                    listen,
                    cluster_dir,
                    options: Box::new(driver::kubernetes::KubernetesOptions {
                        namespace: k8s.k8s_namespace,
                        image: k8s.k8s_image,
                        pod_template: k8s.k8s_pod_template,
                        service_account: k8s.k8s_service_account,
                        node_selector: k8s.k8s_node_selector,
                        labels: k8s.k8s_label,
                        executor_env,
                        driver_pod: k8s.k8s_driver_pod,
                        secret: k8s.k8s_secret,
                        driver_host: k8s.k8s_driver_host,
                        program: k8s.k8s_program,
                        memory_overhead_mb: k8s.k8s_memory_overhead_mb,
                        register_timeout,
                    }),
                }
            } else {
                let Some(cluster_dir) = cluster_dir else {
                    bail!(
                        "the standalone cluster manager needs --cluster-dir (made by `sluice \
                         cluster init`)"
                    );
                };
                ClusterMode::Standalone {
                    listen,
                    cluster_dir,
                    min_executors,
                    max_executors,
                    register_timeout,
                }
            };
            run_job(job, cluster, common)
        }
        Command::Executor {
            driver,
            cluster_dir,
            name,
            slots,
            memory_mb,
            work_dir,
            bind,
            advertise,
            connect_timeout_secs,
            rejoin_timeout_secs,
            parent_pid,
            log: _,
        } => {
            let driver = driver
                .to_socket_addrs()
                .with_context(|| format!("resolving driver address {driver}"))?
                .next()
                .with_context(|| format!("driver address {driver} resolves to nothing"))?;
            let (work_dir, temporary) = match work_dir {
                Some(d) => (d, false),
                // A fresh directory with an unpredictable name (mode 0700), never one another
                // user could have made first; removed at exit.
                None => (
                    tempfile::Builder::new()
                        .prefix("sluice-executor-")
                        .tempdir()
                        .context("creating the executor's scratch directory")?
                        .keep(),
                    true,
                ),
            };
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            let config = ExecutorConfig {
                driver,
                cluster_dir,
                name: name.unwrap_or_else(|| format!("executor-{host}-{}", std::process::id())),
                slots: slots.unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map(|n| n.get() as u32)
                        .unwrap_or(1)
                }),
                memory_bytes: memory_mb * 1024 * 1024,
                work_dir: work_dir.clone(),
                bind,
                advertise,
                heartbeat_interval: Duration::from_millis(500),
                parent_pid,
                connect_timeout: Duration::from_secs(connect_timeout_secs),
                rejoin_timeout: Duration::from_secs(rejoin_timeout_secs),
                task_delay: std::env::var("SLUICE_TEST_TASK_DELAY_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_millis),
            };
            let result = executor::run(config);
            if temporary {
                let _ = std::fs::remove_dir_all(&work_dir);
            }
            Ok(result?)
        }
        Command::Explain {
            query: _,
            parallelism,
            broadcast_threshold,
            log: _,
        } => {
            let job = need_job(job)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let planned = runtime.block_on(sluice_engine::plan::plan_with(
                &job,
                parallelism,
                broadcast_threshold,
            ))?;
            print!("{}", planned.explain());
            Ok(())
        }
        Command::Cluster {
            command: ClusterCommand::Init { dir },
        } => {
            if dir.join("ca.key").exists() {
                bail!(
                    "{} already holds a cluster CA (ca.key); refusing to overwrite it",
                    dir.display()
                );
            }
            let ca = sluice_net::ClusterCa::generate(&dir.display().to_string())?;
            ca.write_to_dir(&dir, true)?;
            println!(
                "created cluster CA in {} (ca.crt, ca.key). Give every host this directory; start the driver with --cluster-dir {0} and executors with --cluster-dir {0}.",
                dir.display()
            );
            Ok(())
        }
        Command::Checkpoint {
            command: CheckpointCommand::Inspect { dir, json },
        } => inspect_checkpoint(&dir, json),
        Command::Checkpoint {
            command: CheckpointCommand::Check { job, dir },
        } => check_checkpoint(&job, &dir),
        Command::Checkpoint {
            command:
                CheckpointCommand::State {
                    dir,
                    operator,
                    epoch,
                    job,
                    output,
                    limit,
                },
        } => output::checkpoint_state(
            &dir,
            operator,
            epoch,
            job.as_deref(),
            output.as_deref(),
            limit,
        ),
        Command::Ui {
            checkpoint,
            ui,
            ui_token,
        } => serve_history(&checkpoint, ui, ui_token),
        Command::Config {
            command: ConfigCommand::Show { command, args },
        } => layers::show_config(&cli_command(), cli.config, &command, &args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut cli_command(), "sluice", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(cli_command()).render(&mut std::io::stdout())?;
            Ok(())
        }
    }
}

/// The UI's address to print: the token goes in the URL only when it was given on the
/// command line (the user knows it), never from a file or the environment.
fn ui_url(addr: std::net::SocketAddr, token: &Option<String>) -> String {
    let shown = match token {
        Some(_) => "?token=...",
        None => "",
    };
    format!("http://{addr}/{shown}")
}

/// `sluice ui --checkpoint DIR`: a stopped query's pages, from its progress records.
fn serve_history(
    checkpoint: &std::path::Path,
    addr: std::net::SocketAddr,
    token: Option<String>,
) -> anyhow::Result<()> {
    let location = sluice_checkpoint::Location::parse(&checkpoint.to_string_lossy())?;
    let store = sluice_checkpoint::CheckpointStore::open_existing(location)
        .with_context(|| format!("opening the checkpoint {}", checkpoint.display()))?;
    let mut records = Vec::new();
    for epoch in store.planned_epochs()? {
        if let Some(p) = store.read_progress::<driver::EpochProgress>(epoch)? {
            records.push(p);
        }
    }
    let epochs = records.len();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The stage DAG, planned again from the job the checkpoint keeps (at the partition count
    // its last epoch ran with); without it the stages page shows the recorded task spreads.
    let stages = match store.read_job::<sluice_engine::job::check::JobRecord>()? {
        Some(record) if !record.text.is_empty() => {
            let partitions = match store.planned_epochs()?.last() {
                Some(&last) => store
                    .read_offsets::<driver::EpochInput>(last)?
                    .and_then(|i| i.partitions),
                None => None,
            };
            let planned = sluice_engine::job::Job::parse(sluice_engine::job::JobText {
                origin: record.origin,
                text: record.text,
            })
            .map_err(anyhow::Error::from)
            .and_then(|job| {
                Ok(runtime.block_on(sluice_engine::plan::plan(&job, partitions.unwrap_or(2)))?)
            });
            match planned {
                Ok(planned) => driver::events::StageInfo::of(&planned),
                Err(e) => {
                    output::say(
                        "WARN",
                        &format!("sluice: the kept job does not plan any more ({e}); stages are shown without their plans"),
                    );
                    Vec::new()
                }
            }
        }
        _ => Vec::new(),
    };
    let ui = Ui::history(store.metadata().query_id.to_string(), records, stages);
    runtime.block_on(async {
        let bound = sluice_engine::ui::serve(
            ui,
            UiOptions {
                addr,
                token: token.clone(),
            },
        )
        .await?;
        output::say(
            "INFO",
            &format!(
                "sluice: UI of {} ({epochs} epochs recorded) at {}; Ctrl-C stops it",
                checkpoint.display(),
                ui_url(bound, &token)
            ),
        );
        tokio::signal::ctrl_c().await?;
        anyhow::Ok(())
    })
}

fn need_job(job: Option<Job>) -> anyhow::Result<Job> {
    job.context("give a job file or -e \"SQL\"")
}

fn run_job(job: Option<Job>, cluster: ClusterMode, common: DriverArgs) -> anyhow::Result<()> {
    let job = need_job(job)?;
    let config = DriverConfig {
        cluster,
        parallelism: common.parallelism,
        checkpoint: common.checkpoint,
        max_result_rows: common.max_result_rows,
        heartbeat_timeout: common.heartbeat_timeout.max(Duration::from_secs(1)),
        limits: driver::scheduler::SchedulerLimits {
            max_task_failures: common.max_task_attempts.max(1),
            speculation: common.speculation.filter(|m| *m >= 1.0),
            ..Default::default()
        },
        executor_wait: Duration::from_secs(60),
        max_executor_restarts: common.max_executor_restarts,
        allocation: driver::allocation::AllocationTuning {
            window: common.allocation_window.max(1),
            cooldown: common.allocation_cooldown,
            shrink_after: common.allocation_idle_epochs.max(1),
            idle_percent: common.allocation_idle_load,
            idle_timeout: common.allocation_idle_timeout,
        },
        work_dir: common.work_dir,
        program: std::env::current_exe().context("locating the sluice binary")?,
        trigger: common.trigger,
        retain_epochs: common.retain_epochs.max(1),
        fsync: !common.no_fsync,
        no_data_epochs: common.no_data_epochs,
        watermark_epochs: common.watermark_epochs,
        max_epochs: common.max_epochs,
        watermark_idle_timeout: common.watermark_idle_timeout,
        broadcast_bytes: common.broadcast_threshold,
        adaptive: driver::adaptive::AdaptiveOptions {
            skew_factor: common.skew_factor.max(0.0),
            skew_min_bytes: common.skew_min_bytes,
            target_task_bytes: common.target_task_bytes,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let events = match &common.events {
        Some(path) => Some(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening the events file {}", path.display()))?,
        )),
        None => None,
    };
    let terminal: Arc<dyn driver::Reporter> = Arc::new(Terminal {
        progress_json: common.progress.is_some(),
        events,
        events_failed: std::sync::atomic::AtomicBool::new(false),
        bar: std::sync::Mutex::new(None),
    });
    let (reporter, ui) = match common.ui {
        cli::UiAddr::Off => (terminal, None),
        cli::UiAddr::At(addr) => {
            let ui = Ui::live();
            let options = UiOptions {
                addr,
                token: common.ui_token.clone(),
            };
            let bound = runtime.block_on(sluice_engine::ui::serve(ui.clone(), options))?;
            output::say(
                "INFO",
                &format!("sluice: UI at {}", ui_url(bound, &common.ui_token)),
            );
            let tee: Arc<dyn driver::Reporter> = Arc::new(Tee(vec![terminal, ui.clone()]));
            (tee, Some(ui))
        }
    };
    let report = runtime.block_on(driver::run(job, config, reporter));
    if let Some(ui) = &ui {
        ui.finished(report.is_ok());
    }
    // Dropped (not shut down in the background): on an early error the runtime still owns the
    // supervisors of the executor processes, and dropping them kills those processes.
    drop(runtime);
    print_report(&report?);
    Ok(())
}
