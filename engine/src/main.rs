//! The `sluice` command: run jobs, start drivers and executors, manage clusters and checkpoints.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use sluice_engine::driver::{
    self, ClusterMode, DriverConfig, EpochOutcome, Event, JobReport, Reporter,
};
use sluice_engine::executor::{self, ExecutorConfig};
use sluice_engine::job::{Job, JobText};
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

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a streaming-first dataflow engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job on the embedded local cluster (driver + executor processes on this machine).
    Run {
        #[command(flatten)]
        query: QueryArgs,
        /// Executor processes to start.
        #[arg(long, default_value_t = 2)]
        executors: usize,
        /// Task slots per executor (default: CPU cores / executors, at least 1).
        #[arg(long)]
        slots: Option<u32>,
        /// Memory per executor in MiB (reported to the scheduler).
        #[arg(long, default_value_t = 1024)]
        memory_mb: u64,
        #[command(flatten)]
        common: DriverArgs,
    },
    /// Run a job as the driver of a standalone cluster; executors join with `sluice executor`.
    Driver {
        #[command(flatten)]
        query: QueryArgs,
        /// Address to listen on for executors.
        #[arg(long, default_value = "0.0.0.0:7077")]
        listen: SocketAddr,
        /// Cluster directory made by `sluice cluster init` (needs ca.crt and ca.key).
        #[arg(long)]
        cluster_dir: PathBuf,
        /// Executors that must join before the job starts.
        #[arg(long, default_value_t = 1)]
        min_executors: usize,
        /// Seconds to wait for them.
        #[arg(long, default_value_t = 120)]
        register_timeout_secs: u64,
        #[command(flatten)]
        common: DriverArgs,
    },
    /// Start an executor that joins a driver.
    Executor {
        /// The driver's address (HOST:PORT).
        #[arg(long)]
        driver: String,
        /// Cluster directory with ca.crt and either ca.key or this executor's NAME.crt/NAME.key.
        #[arg(long)]
        cluster_dir: PathBuf,
        /// Name in logs and in its certificate (default: executor-HOST-PID).
        #[arg(long)]
        name: Option<String>,
        /// Tasks run at once (default: CPU cores).
        #[arg(long)]
        slots: Option<u32>,
        /// Memory this executor may use, in MiB.
        #[arg(long, default_value_t = 1024)]
        memory_mb: u64,
        /// Directory for shuffle outputs (default: a temporary directory removed at exit).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Address to bind for shuffle traffic from peers.
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddr,
        /// IP address peers should use to reach this executor (default: the address it uses
        /// to reach the driver).
        #[arg(long)]
        advertise: Option<std::net::IpAddr>,
        /// Seconds to keep trying to reach the driver at start-up.
        #[arg(long, default_value_t = 60)]
        connect_timeout_secs: u64,
        /// Seconds to wait for a lost driver to come back (a restarted driver resumes its
        /// query); 0 exits when the driver is lost.
        #[arg(long, default_value_t = 600)]
        rejoin_timeout_secs: u64,
        /// Exit when this process is gone (used by the local cluster manager).
        #[arg(long, hide = true)]
        parent_pid: Option<u32>,
    },
    /// Show the stage DAG a job would run.
    Explain {
        #[command(flatten)]
        query: QueryArgs,
        /// Partitions per scan and shuffle.
        #[arg(long, default_value_t = 2)]
        parallelism: usize,
    },
    /// Manage standalone cluster credentials.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Inspect checkpoints.
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCommand,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Create a cluster directory with a new certificate authority (ca.crt, ca.key mode 0600).
    Init {
        /// The directory to create.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// Print a checkpoint's query, epochs and recorded inputs.
    Inspect {
        /// The checkpoint directory.
        dir: PathBuf,
    },
}

#[derive(Args)]
struct QueryArgs {
    /// A job file (CREATE TABLE ... WITH (...); INSERT INTO ... SELECT ...).
    job: Option<PathBuf>,
    /// A query given inline instead of a job file; results are printed.
    #[arg(short = 'e', long = "execute", conflicts_with = "job")]
    execute: Option<String>,
}

#[derive(Args)]
struct DriverArgs {
    /// Checkpoint directory; rerunning a job on the same checkpoint does not repeat its output.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Partitions per scan and shuffle (default: total executor slots).
    #[arg(long)]
    parallelism: Option<usize>,
    /// Most rows printed for a SELECT; the rest are counted, not held.
    #[arg(long, default_value_t = 1000)]
    max_result_rows: usize,
    /// Time without a heartbeat (sent every 500 ms) before an executor is declared lost and
    /// its work re-run elsewhere: 2s, 1500ms, 1m. A hung or stopped executor counts.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    heartbeat_timeout: Duration,
    /// Failed attempts a task may have (errors, lost executors) before the query stops.
    #[arg(long, default_value_t = 4)]
    max_task_attempts: u32,
    /// Launch a second attempt of a task running this many times longer than the median of its
    /// stage's finished tasks (e.g. 1.5); the first attempt to finish wins. Off by default.
    #[arg(long)]
    speculation: Option<f64>,
    /// Local mode: how many times lost executors are restarted (with backoff) before the
    /// cluster shrinks for good.
    #[arg(long, default_value_t = 20)]
    max_executor_restarts: u32,
    /// Directory for the run's certificates and executor scratch space (default: temporary).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// When streaming epochs run: an interval (200ms, 1s, 5m), `once` or `available-now`.
    /// Default 1s. Bounded jobs are always one epoch.
    #[arg(long)]
    trigger: Option<driver::Trigger>,
    /// `json`: print each epoch's progress record as one JSON line on stdout.
    #[arg(long, value_parser = ["json"])]
    progress: Option<String>,
    /// Append every driver event to FILE as one JSON line: epoch_started, stage_finished,
    /// epoch_committed (with its progress record), console_rows, notice.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Epochs kept in the checkpoint's offsets, commits and progress logs.
    #[arg(long, default_value_t = 100)]
    retain_epochs: u64,
    /// Do not fsync the checkpoint's logs (faster epochs; a power loss may lose the last
    /// epochs' records, a process crash cannot).
    #[arg(long)]
    no_fsync: bool,
    /// Run an epoch on every trigger even when no source has new data (streaming).
    #[arg(long)]
    no_data_epochs: bool,
    /// Stop after this many epochs have committed in this run (streaming).
    #[arg(long)]
    max_epochs: Option<u64>,
}

fn main() {
    disable_transparent_huge_pages();
    init_logging();
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            if matches!(
                e.downcast_ref::<EngineError>(),
                Some(EngineError::Interrupted)
            ) {
                eprintln!("sluice: interrupted; nothing was committed");
                130
            } else {
                eprintln!("error: {e:#}");
                1
            }
        }
    };
    tracing::trace!(target: "sluice::latency", code, "exiting");
    exit_now(code)
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            query,
            executors,
            slots,
            memory_mb,
            common,
        } => {
            if executors == 0 {
                bail!("--executors must be at least 1");
            }
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            let slots = slots.unwrap_or_else(|| (cores / executors).max(1) as u32);
            let cluster = ClusterMode::Local {
                executors,
                slots_per_executor: slots,
                memory_bytes: memory_mb * 1024 * 1024,
            };
            run_job(query, cluster, common)
        }
        Command::Driver {
            query,
            listen,
            cluster_dir,
            min_executors,
            register_timeout_secs,
            common,
        } => {
            let cluster = ClusterMode::Standalone {
                listen,
                cluster_dir,
                min_executors: min_executors.max(1),
                register_timeout: Duration::from_secs(register_timeout_secs),
            };
            run_job(query, cluster, common)
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
        Command::Explain { query, parallelism } => {
            let job = load_job(&query)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let planned = runtime.block_on(sluice_engine::plan::plan(&job, parallelism))?;
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
            command: CheckpointCommand::Inspect { dir },
        } => inspect_checkpoint(&dir),
    }
}

/// `500ms`, `2s`, `1m`: a duration option.
fn parse_duration(text: &str) -> Result<Duration, String> {
    match text.parse::<driver::Trigger>() {
        Ok(driver::Trigger::Interval(d)) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "'{text}' is not a duration: use a number with ms, s or m (500ms, 2s, 1m)"
        )),
    }
}

fn load_job(query: &QueryArgs) -> anyhow::Result<Job> {
    let text = match (&query.job, &query.execute) {
        (Some(path), None) => JobText {
            origin: path.display().to_string(),
            text: std::fs::read_to_string(path)
                .with_context(|| format!("reading job file {}", path.display()))?,
        },
        (None, Some(sql)) => JobText {
            origin: "query".into(),
            text: sql.clone(),
        },
        _ => bail!("give a job file or -e \"SQL\""),
    };
    Ok(Job::parse(text)?)
}

fn run_job(query: QueryArgs, cluster: ClusterMode, common: DriverArgs) -> anyhow::Result<()> {
    let job = load_job(&query)?;
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
        work_dir: common.work_dir,
        program: std::env::current_exe().context("locating the sluice binary")?,
        trigger: common.trigger,
        retain_epochs: common.retain_epochs.max(1),
        fsync: !common.no_fsync,
        no_data_epochs: common.no_data_epochs,
        max_epochs: common.max_epochs,
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
    let reporter = Arc::new(Terminal {
        progress_json: common.progress.is_some(),
        events,
        events_failed: std::sync::atomic::AtomicBool::new(false),
    });
    let report = runtime.block_on(driver::run(job, config, reporter));
    // Dropped (not shut down in the background): on an early error the runtime still owns the
    // supervisors of the executor processes, and dropping them kills those processes.
    drop(runtime);
    print_report(&report?);
    Ok(())
}

/// Renders the driver's events on the terminal: notices and (streaming) each epoch's summary
/// line on stderr; `--progress json` records and streamed console rows on stdout; with
/// `--events FILE`, every event as a JSON line in FILE.
struct Terminal {
    progress_json: bool,
    events: Option<std::sync::Mutex<std::fs::File>>,
    /// Writing the events file failed (said once).
    events_failed: std::sync::atomic::AtomicBool,
}

/// One line of the `--events` file: when, and the event's own fields.
#[derive(serde::Serialize)]
struct EventLine<'a> {
    at_ms: u64,
    #[serde(flatten)]
    event: &'a Event,
}

impl Terminal {
    fn write_event(&self, event: &Event) {
        use std::io::Write;
        let Some(file) = &self.events else { return };
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let written = serde_json::to_vec(&EventLine { at_ms, event })
            .map_err(std::io::Error::other)
            .and_then(|mut line| {
                line.push(b'\n');
                let mut file = file.lock().map_err(|_| std::io::Error::other("poisoned"))?;
                file.write_all(&line)
            });
        if let Err(e) = written {
            if !self
                .events_failed
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                eprintln!("sluice: writing the events file failed: {e} (the job goes on)");
            }
        }
    }
}

impl Reporter for Terminal {
    fn report(&self, event: Event) {
        self.write_event(&event);
        match event {
            Event::EpochStarted { .. } | Event::StageFinished { .. } => {}
            Event::EpochCommitted { progress, bounded } => {
                if self.progress_json {
                    println!("{}", serde_json::to_string(&progress).unwrap_or_default());
                } else if !bounded {
                    eprintln!("{}", progress.summary_line());
                }
            }
            Event::ConsoleRows { epoch, table } => println!("-- epoch {epoch} --\n{table}"),
            Event::Notice { message } => eprintln!("sluice: {message}"),
        }
    }
}

fn print_report(report: &JobReport) {
    if let Some(console) = &report.console {
        println!("{console}");
    }
    let t = &report.timings;
    if report.epochs > 1 || report.stopped_by_user {
        eprintln!(
            "sluice: {} after {} epoch(s) in this run (last committed: {}); {} rows in {} files; the same command resumes from the checkpoint",
            if report.stopped_by_user { "stopped" } else { "finished" },
            report.epochs,
            report.epoch,
            report.output_rows,
            report.files
        );
        return;
    }
    match report.outcome {
        EpochOutcome::AlreadyCommitted if report.epochs == 0 && report.stages > 0 => eprintln!(
            "sluice: no new input; nothing to do (query {})",
            report.query_id
        ),
        EpochOutcome::AlreadyCommitted => eprintln!(
            "sluice: epoch {} of query {} is already committed in this checkpoint ({} rows); nothing to do",
            report.epoch, report.query_id, report.output_rows
        ),
        EpochOutcome::CommitCompleted => eprintln!(
            "sluice: completed the recorded commit of epoch {}: {} rows in {} files",
            report.epoch, report.output_rows, report.files
        ),
        EpochOutcome::Committed => {
            let peak = report.executors.iter().map(|e| e.peak_rss_bytes).max().unwrap_or(0);
            let what = if report.console.is_some() {
                format!("{} rows", report.output_rows)
            } else {
                format!("{} rows in {} files", report.output_rows, report.files)
            };
            eprintln!(
                "sluice: epoch {} committed: {what}; {} stages, {} tasks on {} executors (peak RSS {} MiB); {:.3}s (plan {:.3}s, offsets {:.3}s, run {:.3}s, commit {:.3}s)",
                report.epoch,
                report.stages,
                report.tasks,
                report.executors.len(),
                peak / (1024 * 1024),
                t.total.as_secs_f64(),
                t.planning.as_secs_f64(),
                t.offsets.as_secs_f64(),
                t.execution.as_secs_f64(),
                t.commit.as_secs_f64()
            );
        }
    }
}

fn inspect_checkpoint(dir: &std::path::Path) -> anyhow::Result<()> {
    let store = sluice_checkpoint::CheckpointStore::open_existing(dir)?;
    let meta = store.metadata();
    println!("checkpoint {}", dir.display());
    println!("  query id:         {}", meta.query_id);
    println!("  plan fingerprint: {}", meta.plan_fingerprint);
    println!("  format version:   {}", meta.format_version);
    let log = store.epoch_log()?;
    if log.last_planned.is_none() {
        println!("  no epochs yet");
        return Ok(());
    }
    let mut last_input: Option<driver::EpochInput> = None;
    for epoch in store.planned_epochs()? {
        let n = epoch.0;
        let Some(input) = store.read_offsets::<driver::EpochInput>(epoch)? else {
            continue;
        };
        let commit = store.read_commit(epoch)?;
        let state = match &commit {
            Some(c) => format!("committed ({} rows)", c.output_rows),
            None => "planned, not committed (will be re-run with the same input)".into(),
        };
        println!("  epoch {n}: {state}");
        for (table, source) in &input.sources {
            print_source(table, source);
        }
        if let Some(p) = store.read_progress::<driver::EpochProgress>(epoch)? {
            println!(
                "    progress: {} rows in ({} skipped, {} dead-lettered), {} rows in {} files out, {:.1} ms",
                p.input_rows,
                p.skipped_records,
                p.dead_lettered_records,
                p.sink_rows,
                p.sink_files,
                p.duration_ms.total
            );
        }
        last_input = Some(input);
    }
    // Every skipped offset the checkpoint holds (gaps/ is never pruned by retention).
    let gap_epochs = store.gap_epochs()?;
    let mut header = false;
    for epoch in gap_epochs {
        let Some(gaps) = store
            .read_gaps::<std::collections::BTreeMap<String, Vec<sluice_connectors::OffsetGap>>>(
                epoch,
            )?
        else {
            continue;
        };
        for (table, list) in gaps {
            for g in list {
                if !header {
                    println!("  offsets that never reached the output (gaps/N):");
                    header = true;
                }
                println!(
                    "    epoch {}: {table}: partition {} offsets {}..{}: {}",
                    epoch.0, g.partition, g.expected, g.resumed_at, g.reason
                );
            }
        }
    }
    // Lag: how far each Kafka source's position is behind the broker now.
    if let Some(input) = last_input {
        for (table, source) in &input.sources {
            let Some(endpoint) = &source.kafka else {
                continue;
            };
            match sluice_connectors::kafka::high_watermarks(endpoint) {
                Ok(highs) => {
                    let mut total = 0;
                    let parts: Vec<String> = highs
                        .iter()
                        .map(|(p, h)| {
                            let at = source.position.get(p).copied().unwrap_or(0);
                            let lag = (h - at).max(0);
                            total += lag;
                            format!("{p}: at {at} of {h} (lag {lag})")
                        })
                        .collect();
                    println!(
                        "  lag of {table} now: {total} records [{}]",
                        parts.join(", ")
                    );
                }
                Err(e) => println!("  lag of {table}: broker not reachable ({e})"),
            }
        }
    }
    Ok(())
}

fn print_source(table: &str, source: &sluice_connectors::SourceEpoch) {
    use sluice_connectors::Split;
    let kafka: Vec<String> = source
        .splits
        .iter()
        .filter_map(|s| match s {
            Split::Kafka(k) => Some(format!("p{} [{}, {})", k.partition, k.start, k.end)),
            Split::File(_) => None,
            Split::Generated(g) => Some(format!("events [{}, {})", g.from, g.to)),
        })
        .collect();
    if source.kafka.is_some() {
        println!(
            "    {table}: {} records: {}",
            source.records(),
            if kafka.is_empty() {
                "nothing new".to_string()
            } else {
                kafka.join(", ")
            }
        );
        let position: Vec<String> = source
            .position
            .iter()
            .map(|(p, o)| format!("{p}:{o}"))
            .collect();
        println!("      next offsets: {}", position.join(", "));
    } else {
        let bytes: u64 = source.splits.iter().map(|s| s.weight()).sum();
        println!(
            "    {table}: {} splits, {} bytes",
            source.splits.len(),
            bytes
        );
    }
    for g in &source.gaps {
        println!(
            "      SKIPPED: partition {} offsets from {} (resumed at {}): {}",
            g.partition, g.expected, g.resumed_at, g.reason
        );
    }
}
