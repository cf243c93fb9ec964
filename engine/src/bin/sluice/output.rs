//! What the command prints: driver events and job reports on the terminal, checkpoint inspection.

use std::sync::atomic::{AtomicBool, Ordering};

use sluice_engine::driver::{self, EpochOutcome, Event, JobReport, Reporter};

/// `--log-format json`: what the command says on stderr is a JSON object per line too, like its
/// log events, so a log shipper reads one format.
static JSON_STDERR: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_json_stderr(on: bool) {
    JSON_STDERR.store(on, Ordering::Relaxed);
}

/// Says `text` on stderr: as is, or as `{"timestamp", "level", "message"}`.
pub(crate) fn say(level: &str, text: &str) {
    if JSON_STDERR.load(Ordering::Relaxed) {
        let line = serde_json::json!({
            "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            "level": level,
            "message": text.strip_prefix("sluice: ").unwrap_or(text),
        });
        eprintln!("{line}");
    } else {
        eprintln!("{text}");
    }
}

macro_rules! say {
    ($($arg:tt)*) => { say("INFO", &format!($($arg)*)) };
}

/// Renders the driver's events on the terminal: notices and (streaming) each epoch's summary
/// line on stderr; `--progress json` records and streamed console rows on stdout; with
/// `--events FILE`, every event as a JSON line in FILE.
pub(crate) struct Terminal {
    pub(crate) progress_json: bool,
    pub(crate) events: Option<std::sync::Mutex<std::fs::File>>,
    /// Writing the events file failed (said once).
    pub(crate) events_failed: std::sync::atomic::AtomicBool,
    /// A bounded run's progress bar on a terminal.
    pub(crate) bar: std::sync::Mutex<Option<Progress>>,
}

/// A bounded run's progress on stderr (indicatif): stages, tasks and rows done. Drawn only when
/// stderr is a terminal and stderr is not JSON; nothing otherwise.
pub(crate) struct Progress {
    bar: indicatif::ProgressBar,
    stages: usize,
    stages_done: usize,
    rows: u64,
}

impl Progress {
    fn start(stages: &[driver::events::StageInfo]) -> Option<Progress> {
        use std::io::IsTerminal;
        if JSON_STDERR.load(Ordering::Relaxed) || !std::io::stderr().is_terminal() {
            return None;
        }
        let tasks: usize = stages.iter().map(|s| s.tasks).sum();
        let bar = indicatif::ProgressBar::new(tasks as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} tasks · {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        let progress = Progress {
            bar,
            stages: stages.len(),
            stages_done: 0,
            rows: 0,
        };
        progress.message();
        Some(progress)
    }

    fn message(&self) {
        self.bar.set_message(format!(
            "stages {}/{} · {} rows",
            self.stages_done, self.stages, self.rows
        ));
    }
}

/// One line of the `--events` file: when, and the event's own fields.
#[derive(serde::Serialize)]
pub(crate) struct EventLine<'a> {
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
                say(
                    "WARN",
                    &format!("sluice: writing the events file failed: {e} (the job goes on)"),
                );
            }
        }
    }
}

impl Reporter for Terminal {
    fn report(&self, event: Event) {
        self.write_event(&event);
        let mut bar = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::QueryStarted {
                bounded: true,
                stages,
                ..
            } if !self.progress_json => *bar = Progress::start(&stages),
            Event::TaskFinished { rows, .. } => {
                if let Some(p) = bar.as_mut() {
                    if p.bar.position() < p.bar.length().unwrap_or(0) {
                        p.bar.inc(1);
                    }
                    p.rows += rows;
                    p.message();
                }
            }
            Event::StageFinished { .. } => {
                if let Some(p) = bar.as_mut() {
                    p.stages_done = (p.stages_done + 1).min(p.stages);
                    p.message();
                }
            }
            Event::EpochStarted { .. } | Event::QueryStarted { .. } | Event::Executors { .. } => {}
            Event::EpochCommitted { progress, bounded } => {
                if let Some(p) = bar.take() {
                    p.bar.finish_and_clear();
                }
                if self.progress_json {
                    println!("{}", serde_json::to_string(&progress).unwrap_or_default());
                } else if !bounded {
                    say!("{}", progress.summary_line());
                }
            }
            Event::ConsoleRows { epoch, table } => println!("-- epoch {epoch} --\n{table}"),
            Event::Notice { message } => match bar.as_ref() {
                Some(p) => p.bar.suspend(|| say!("sluice: {message}")),
                None => say!("sluice: {message}"),
            },
        }
    }
}

pub(crate) fn print_report(report: &JobReport) {
    if let Some(console) = &report.console {
        println!("{console}");
    }
    let t = &report.timings;
    let peak_mib = report
        .executors
        .iter()
        .map(|e| e.peak_rss_bytes)
        .max()
        .unwrap_or(0)
        / (1024 * 1024);
    if report.epochs > 1 || report.stopped_by_user {
        say!(
            "sluice: {} after {} epoch(s) in this run (last committed: {}); {} rows in {} files; executors' peak RSS {} MiB; the same command resumes from the checkpoint",
            if report.stopped_by_user { "stopped" } else { "finished" },
            report.epochs,
            report.epoch,
            report.output_rows,
            report.files,
            peak_mib
        );
        return;
    }
    match report.outcome {
        EpochOutcome::AlreadyCommitted if report.epochs == 0 && report.stages > 0 => say!(
            "sluice: no new input; nothing to do (query {})",
            report.query_id
        ),
        EpochOutcome::AlreadyCommitted => say!(
            "sluice: epoch {} of query {} is already committed in this checkpoint ({} rows); nothing to do",
            report.epoch, report.query_id, report.output_rows
        ),
        EpochOutcome::CommitCompleted => say!(
            "sluice: completed the recorded commit of epoch {}: {} rows in {} files",
            report.epoch, report.output_rows, report.files
        ),
        EpochOutcome::Committed => {
            let what = if report.console.is_some() {
                format!("{} rows", report.output_rows)
            } else {
                format!("{} rows in {} files", report.output_rows, report.files)
            };
            say!(
                "sluice: epoch {} committed: {what}; {} stages, {} tasks on {} executors (peak RSS {} MiB); {:.3}s (plan {:.3}s, offsets {:.3}s, run {:.3}s, commit {:.3}s)",
                report.epoch,
                report.stages,
                report.tasks,
                report.executors.len(),
                peak_mib,
                t.total.as_secs_f64(),
                t.planning.as_secs_f64(),
                t.offsets.as_secs_f64(),
                t.execution.as_secs_f64(),
                t.commit.as_secs_f64()
            );
        }
    }
}

fn open_checkpoint(dir: &std::path::Path) -> anyhow::Result<sluice_checkpoint::CheckpointStore> {
    let location = sluice_checkpoint::Location::parse(&dir.to_string_lossy())?;
    Ok(sluice_checkpoint::CheckpointStore::open_existing(location)?)
}

/// `sluice checkpoint inspect --json`: the checkpoint as one JSON object — its metadata, the
/// job it keeps, each epoch's recorded input, commit and progress record, and every gap.
fn inspect_json(dir: &std::path::Path) -> anyhow::Result<()> {
    use serde_json::{json, Value};
    let store = open_checkpoint(dir)?;
    let meta = store.metadata();
    let mut epochs = Vec::new();
    for epoch in store.planned_epochs()? {
        let input = store.read_offsets::<Value>(epoch)?;
        let commit = store.read_commit(epoch)?;
        let progress = store.read_progress::<Value>(epoch)?;
        epochs.push(json!({
            "epoch": epoch.0,
            "committed": commit.is_some(),
            "commit": commit,
            "input": input,
            "progress": progress,
        }));
    }
    let mut gaps = Vec::new();
    for epoch in store.gap_epochs()? {
        if let Some(g) = store.read_gaps::<Value>(epoch)? {
            gaps.push(json!({ "epoch": epoch.0, "gaps": g }));
        }
    }
    let job = store.read_job::<Value>()?;
    let out = json!({
        "checkpoint": dir.display().to_string(),
        "query_id": meta.query_id.to_string(),
        "plan_fingerprint": meta.plan_fingerprint,
        "format_version": meta.format_version,
        "created_at_ms": meta.created_at_ms,
        "job": job,
        "epochs": epochs,
        "gaps": gaps,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `sluice checkpoint state DIR`.
pub(crate) fn checkpoint_state(
    dir: &std::path::Path,
    operator: Option<u32>,
    epoch: Option<u64>,
    job: Option<&std::path::Path>,
    output: Option<&std::path::Path>,
    limit: usize,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let store = open_checkpoint(dir)?;
    let text = match job {
        Some(path) => sluice_engine::job::JobText {
            origin: path.display().to_string(),
            text: std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        },
        None => {
            let record = store
                .read_job::<sluice_engine::job::check::JobRecord>()?
                .filter(|r| !r.text.is_empty())
                .context("the checkpoint keeps no job text (written by an older Sluice): give the job with --job JOB")?;
            sluice_engine::job::JobText {
                origin: record.origin,
                text: record.text,
            }
        }
    };
    let job = sluice_engine::job::Job::parse(text)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (schema, batches, epoch, operator) =
        runtime.block_on(sluice_engine::driver::inspect::state_rows(
            &job,
            &store,
            operator,
            epoch.map(sluice_checkpoint::Epoch),
        ))?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if let Some(path) = output {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
        for b in &batches {
            writer.write(b)?;
        }
        writer.close()?;
        say!(
            "sluice: {rows} state rows of operator {operator} at epoch {epoch} written to {}",
            path.display()
        );
        return Ok(());
    }
    let mut shown = Vec::new();
    let mut left = limit;
    for b in &batches {
        if left == 0 {
            break;
        }
        let take = b.num_rows().min(left);
        shown.push(b.slice(0, take));
        left -= take;
    }
    println!("{}", arrow::util::pretty::pretty_format_batches(&shown)?);
    say!(
        "sluice: operator {operator} at epoch {epoch}: {rows} state rows{}",
        if rows > limit {
            format!(" ({limit} shown; --limit N or --output FILE.parquet for more)")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `sluice checkpoint check JOB DIR`.
pub(crate) fn check_checkpoint(job: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(job).with_context(|| format!("reading {}", job.display()))?;
    let job = sluice_engine::job::Job::parse(sluice_engine::job::JobText {
        origin: job.display().to_string(),
        text,
    })?;
    let store = open_checkpoint(dir)?;
    let record = store.read_job::<sluice_engine::job::check::JobRecord>()?;
    let epochs = !store.planned_epochs()?.is_empty();
    let verdict = sluice_engine::job::check::check(
        &store.metadata().plan_fingerprint,
        record.as_ref(),
        &job,
        epochs,
    );
    for reason in &verdict.reasons {
        println!("{reason}");
    }
    if !verdict.resumes {
        anyhow::bail!(
            "the job cannot resume from {}: run it with a new --checkpoint",
            dir.display()
        );
    }
    Ok(())
}

pub(crate) fn inspect_checkpoint(dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    if json {
        return inspect_json(dir);
    }
    let store = open_checkpoint(dir)?;
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

pub(crate) fn print_source(table: &str, source: &sluice_connectors::SourceEpoch) {
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
