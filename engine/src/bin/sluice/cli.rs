//! The command line: every command and option (clap), documented where `--help` shows it.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};
use sluice_engine::config;
use sluice_engine::driver;

#[derive(Parser)]
#[command(
    name = "sluice",
    version = VERSION,
    about = "Sluice: a streaming-first dataflow engine"
)]
pub(crate) struct Cli {
    /// Configuration file (TOML; default: $SLUICE_CONFIG, else ~/.config/sluice/sluice.toml if
    /// it exists). Keys are option names (`heartbeat_timeout = "5s"`); `[run]`, `[driver]`,
    /// `[executor]` and `[explain]` tables apply to one command.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `sluice --version`: the version, the commit it was built from and the build profile.
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SLUICE_COMMIT"),
    ", ",
    env!("SLUICE_PROFILE"),
    " build)"
);

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run a job on the embedded local cluster (driver + executor processes on this machine).
    Run {
        #[command(flatten)]
        query: QueryArgs,
        /// Executor processes to start.
        #[arg(long, default_value_t = 2)]
        executors: usize,
        /// Dynamic allocation: the fewest executor processes (default: --executors).
        #[arg(long)]
        min_executors: Option<usize>,
        /// Dynamic allocation: the most executor processes; above the fewest, executors are
        /// started and stopped between epochs as the load asks (default: the fewest, off).
        #[arg(long)]
        max_executors: Option<usize>,
        /// Task slots per executor (default: CPU cores / executors, at least 1).
        #[arg(long)]
        slots: Option<u32>,
        /// Memory per executor in MiB: RocksDB's cache, the memory pool operators spill beyond,
        /// and a reserve (README: Executor memory).
        #[arg(long, default_value_t = 1024)]
        memory_mb: u64,
        #[command(flatten)]
        common: DriverArgs,
    },
    /// Run a job as the driver of a cluster: executors join with `sluice executor`
    /// (standalone), or the driver creates them as Kubernetes pods.
    Driver {
        #[command(flatten)]
        query: QueryArgs,
        /// How executors come to exist: `standalone` (started by hand with `sluice executor`)
        /// or `kubernetes` (the driver creates, watches and replaces executor pods).
        #[arg(long, value_parser = ["standalone", "kubernetes"], default_value = "standalone")]
        cluster_manager: String,
        /// Address to listen on for executors.
        #[arg(long, default_value = "0.0.0.0:7077")]
        listen: SocketAddr,
        /// Cluster directory made by `sluice cluster init` (needs ca.crt and ca.key); required
        /// for standalone, and with --k8s-secret.
        #[arg(long)]
        cluster_dir: Option<PathBuf>,
        /// Executors that must join before the job starts (kubernetes: pods it starts with).
        #[arg(long, default_value_t = 1)]
        min_executors: usize,
        /// Dynamic allocation: the most executors the query asks for (standalone: it reports
        /// how many it wants and uses those that join; kubernetes: it creates and deletes pods;
        /// default: --min-executors).
        #[arg(long)]
        max_executors: Option<usize>,
        /// Seconds to wait for them.
        #[arg(long, default_value_t = 120)]
        register_timeout_secs: u64,
        /// Kubernetes: task slots per executor pod (a CPU request each).
        #[arg(long, default_value_t = 1)]
        slots: u32,
        /// Kubernetes: memory per executor pod in MiB (README: Executor memory); the container
        /// limit adds --k8s-memory-overhead-mb.
        #[arg(long, default_value_t = 1024)]
        memory_mb: u64,
        #[command(flatten)]
        k8s: Box<KubernetesArgs>,
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
        #[command(flatten)]
        log: LogArgs,
    },
    /// Show the stage DAG a job would run.
    Explain {
        #[command(flatten)]
        query: QueryArgs,
        /// Partitions per scan and shuffle.
        #[arg(long, default_value_t = 2)]
        parallelism: usize,
        /// Broadcast join sides reading a bounded table smaller than this (as `run`).
        #[arg(long, default_value = "10MiB", value_parser = parse_bytes)]
        broadcast_threshold: u64,
        #[command(flatten)]
        log: LogArgs,
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
    /// Serve the web UI of a stopped query from its checkpoint's progress records (history):
    /// the same pages and `/api/v1/` as a running driver's, until Ctrl-C.
    Ui {
        /// The checkpoint directory or object-store URL.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Address to serve on (default 127.0.0.1:4040, or the next free port).
        #[arg(long, default_value = "127.0.0.1:4040")]
        ui: SocketAddr,
        /// Token every request must carry (needed for a non-loopback address).
        #[arg(long, env = "SLUICE_UI_TOKEN", hide_env_values = true)]
        ui_token: Option<String>,
    },
    /// Show the effective configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script: `sluice completions bash > FILE`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `sluice man > sluice.1`.
    Man,
}

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print every option of COMMAND with its effective value and where it came from
    /// (default, file, env, SET in the job, flag), for a command line like
    /// `sluice COMMAND ARGS...`: `sluice config show run job.sql --executors 3`.
    Show {
        /// run, driver, executor or explain.
        #[arg(value_parser = config::COMMANDS)]
        command: String,
        /// The command's arguments (job file, flags).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(Args)]
pub(crate) struct LogArgs {
    /// Log format on stderr: `text` (coloured only when stderr is a terminal) or `json` (one
    /// object per event, with the epoch, stage, partition and executor of its context as
    /// fields). What is logged: SLUICE_LOG (e.g. `info`, `sluice_engine=debug`; default warn).
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub(crate) log_format: String,
}

#[derive(Subcommand)]
pub(crate) enum ClusterCommand {
    /// Create a cluster directory with a new certificate authority (ca.crt, ca.key mode 0600).
    Init {
        /// The directory to create.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum CheckpointCommand {
    /// Print a checkpoint's query, epochs and recorded inputs.
    Inspect {
        /// The checkpoint directory.
        dir: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print (or write to Parquet) the rows of a stateful aggregation's state at a committed
    /// epoch: one row per key, its group columns and its accumulators' state, with the state
    /// partition holding it.
    State {
        /// The checkpoint directory or object-store URL.
        dir: PathBuf,
        /// The stateful operator (as numbered in `sluice explain`); needed when the job has
        /// several.
        #[arg(long)]
        operator: Option<u32>,
        /// The epoch (default: the last committed).
        #[arg(long)]
        epoch: Option<u64>,
        /// The job file (default: the job the checkpoint keeps).
        #[arg(long)]
        job: Option<PathBuf>,
        /// Write every row to this Parquet file instead of printing.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Most rows printed.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Say whether JOB (a changed job, say) can resume from the checkpoint DIR, and if not,
    /// which of its tables, watermarks or queries changed. Exit status 0 when it can, 1 when
    /// not.
    Check {
        /// The job file.
        job: PathBuf,
        /// The checkpoint directory or object-store URL.
        dir: PathBuf,
    },
}

#[derive(Args)]
pub(crate) struct QueryArgs {
    /// A job file (CREATE TABLE ... WITH (...); INSERT INTO ... SELECT ...).
    pub(crate) job: Option<PathBuf>,
    /// A query given inline instead of a job file; results are printed.
    #[arg(short = 'e', long = "execute", conflicts_with = "job")]
    pub(crate) execute: Option<String>,
}

#[derive(Args)]
pub(crate) struct KubernetesArgs {
    /// Namespace of the executor pods (default: the driver pod's, or the kubeconfig context's).
    #[arg(long)]
    pub(crate) k8s_namespace: Option<String>,
    /// Container image of the executors (with the `sluice` binary).
    #[arg(long)]
    pub(crate) k8s_image: Option<String>,
    /// Pod template (YAML or JSON) executor pods start from: tolerations, affinity, sidecars,
    /// env, resources; its `executor` container (or first) runs the executor.
    #[arg(long, value_name = "FILE")]
    pub(crate) k8s_pod_template: Option<PathBuf>,
    /// Service account of the executor pods.
    #[arg(long)]
    pub(crate) k8s_service_account: Option<String>,
    /// Node selector of the executor pods, KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) k8s_node_selector: Vec<(String, String)>,
    /// A label on every pod and secret the driver creates, KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) k8s_label: Vec<(String, String)>,
    /// An environment variable of the executors, NAME=VALUE, or NAME for the driver's own
    /// value (repeatable): object-store credentials, SLUICE_LOG.
    #[arg(long, value_name = "NAME[=VALUE]")]
    pub(crate) k8s_executor_env: Vec<String>,
    /// The driver's pod, which owns the executor pods and the secret (default:
    /// $SLUICE_POD_NAME, set from the pod's name in the driver's own pod spec).
    #[arg(long)]
    pub(crate) k8s_driver_pod: Option<String>,
    /// Host or IP executors reach the driver at (default: $SLUICE_POD_IP, or the driver
    /// pod's IP).
    #[arg(long)]
    pub(crate) k8s_driver_host: Option<String>,
    /// A secret holding a `sluice cluster init` directory (ca.crt, ca.key) for the executors;
    /// mount the same at --cluster-dir (default: the driver creates a secret of its own).
    #[arg(long)]
    pub(crate) k8s_secret: Option<String>,
    /// The `sluice` binary in the image.
    #[arg(long, default_value = "sluice")]
    pub(crate) k8s_program: String,
    /// Container memory above --memory-mb (default: 10 %, at least 384 MiB).
    #[arg(long)]
    pub(crate) k8s_memory_overhead_mb: Option<u64>,
}

/// `KEY=VALUE`.
pub(crate) fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{text}' is not KEY=VALUE")),
    }
}

#[derive(Args)]
pub(crate) struct DriverArgs {
    /// Checkpoint directory or object-store URL (s3://bucket/prefix); rerunning a job on the
    /// same checkpoint does not repeat its output.
    #[arg(long)]
    pub(crate) checkpoint: Option<PathBuf>,
    /// Partitions per scan and shuffle (default: total executor slots).
    #[arg(long)]
    pub(crate) parallelism: Option<usize>,
    /// Most rows printed for a SELECT; the rest are counted, not held.
    #[arg(long, default_value_t = 1000)]
    pub(crate) max_result_rows: usize,
    /// Time without a heartbeat (sent every 500 ms) before an executor is declared lost and
    /// its work re-run elsewhere: 2s, 1500ms, 1m. A hung or stopped executor counts.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) heartbeat_timeout: Duration,
    /// Failed attempts a task may have (errors, lost executors) before the query stops.
    #[arg(long, default_value_t = 4)]
    pub(crate) max_task_attempts: u32,
    /// Launch a second attempt of a task running this many times longer than the median of its
    /// stage's finished tasks (e.g. 1.5); the first attempt to finish wins. Off by default.
    #[arg(long)]
    pub(crate) speculation: Option<f64>,
    /// Local mode: how many times lost executors are restarted (with backoff) before the
    /// cluster shrinks for good.
    #[arg(long, default_value_t = 20)]
    pub(crate) max_executor_restarts: u32,
    /// Dynamic allocation: epochs observed before a decision (the stabilisation window).
    #[arg(long, default_value_t = 5)]
    pub(crate) allocation_window: usize,
    /// Dynamic allocation: epochs after a change before the next one.
    #[arg(long, default_value_t = 3)]
    pub(crate) allocation_cooldown: usize,
    /// Dynamic allocation: idle epochs in a row (under 30 % of the trigger interval, no
    /// backlog) before one executor is released.
    #[arg(long, default_value_t = 15)]
    pub(crate) allocation_idle_epochs: usize,
    /// Dynamic allocation: an epoch is idle when it runs under this percentage of the trigger
    /// interval with no backlog (1–79; an epoch over 80 % is busy).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..80))]
    pub(crate) allocation_idle_load: u32,
    /// Dynamic allocation of a bounded job: how long an executor runs nothing (and holds no
    /// output still needed) before it is stopped: 60s, 500ms.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) allocation_idle_timeout: Duration,
    /// A join side reading a bounded table smaller than this (its files' bytes when planned) is
    /// broadcast to every task of the other side instead of both being shuffled: 10MiB; 0
    /// turns broadcasting off.
    #[arg(long, default_value = "10MiB", value_parser = parse_bytes)]
    pub(crate) broadcast_threshold: u64,
    /// Skew: a shuffle partition over this many times its input's median (and over
    /// --skew-min-bytes) is split across tasks where the operator allows it; 0 turns splitting
    /// off.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) skew_factor: f64,
    /// Skew: the least size of a partition worth splitting: 32MiB, 512KiB, 0.
    #[arg(long, default_value = "32MiB", value_parser = parse_bytes)]
    pub(crate) skew_min_bytes: u64,
    /// Adjacent shuffle partitions run as one task while together under this size, and a
    /// skewed partition's slices aim at it (at least its input's median): 16MiB; 0 turns
    /// coalescing off.
    #[arg(long, default_value = "16MiB", value_parser = parse_bytes)]
    pub(crate) target_task_bytes: u64,
    /// Directory for the run's certificates and executor scratch space (default: temporary).
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,
    /// When streaming epochs run: an interval (200ms, 1s, 5m), `once` or `available-now`.
    /// Default 1s. Bounded jobs are always one epoch.
    #[arg(long)]
    pub(crate) trigger: Option<driver::Trigger>,
    /// `json`: print each epoch's progress record as one JSON line on stdout.
    #[arg(long, value_parser = ["json"])]
    pub(crate) progress: Option<String>,
    /// Append every driver event to FILE as one JSON line: epoch_started, stage_finished,
    /// epoch_committed (with its progress record), console_rows, notice.
    #[arg(long, value_name = "FILE")]
    pub(crate) events: Option<PathBuf>,
    /// Epochs kept in the checkpoint's offsets, commits and progress logs.
    #[arg(long, default_value_t = 100)]
    pub(crate) retain_epochs: u64,
    /// Do not fsync the checkpoint's logs (faster epochs; a power loss may lose the last
    /// epochs' records, a process crash cannot).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = false, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub(crate) no_fsync: bool,
    /// Run an epoch on every trigger even when no source has new data (streaming).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = false, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub(crate) no_data_epochs: bool,
    /// After an epoch whose data moves the watermark past the end of a window the query
    /// holds, start the epoch that closes it at once — at most one per trigger interval —
    /// rather than at the next trigger (streaming, interval triggers).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub(crate) watermark_epochs: bool,
    /// Stop after this many epochs have committed in this run (streaming).
    #[arg(long)]
    pub(crate) max_epochs: Option<u64>,
    /// The web UI, JSON API and Prometheus metrics: an address (default 127.0.0.1:4040, or the
    /// next free port when it is taken; printed at start) or `off`.
    #[arg(long, default_value = "127.0.0.1:4040", value_parser = parse_ui)]
    pub(crate) ui: UiAddr,
    /// Token every UI request must carry (`?token=` or `Authorization: Bearer`); required to
    /// bind an address other hosts can reach.
    #[arg(long)]
    pub(crate) ui_token: Option<String>,
    /// A watermarked stream that brings no new records for this long (5s, 1m) stops holding
    /// the query's watermark back, which is otherwise the least of the streams' watermarks.
    /// Default: never.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) watermark_idle_timeout: Option<Duration>,
    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// Where the UI is served.
#[derive(Clone, Copy, Debug)]
pub(crate) enum UiAddr {
    Off,
    At(SocketAddr),
}

/// `off` or `HOST:PORT`.
pub(crate) fn parse_ui(text: &str) -> Result<UiAddr, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(UiAddr::Off);
    }
    text.parse().map(UiAddr::At).map_err(|_| {
        format!("'{text}' is not an address: use IP:PORT (127.0.0.1:4040, 0.0.0.0:4040) or off")
    })
}

/// `500ms`, `2s`, `1m`: a duration option.
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{text:?} is not a size (e.g. 16MiB, 512KiB, 0): {e}"))
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    match text.parse::<driver::Trigger>() {
        Ok(driver::Trigger::Interval(d)) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "'{text}' is not a duration: use a number with ms, s or m (500ms, 2s, 1m)"
        )),
    }
}
