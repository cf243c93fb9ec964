//! The driver's Prometheus metrics (`GET /metrics`, OpenMetrics text), kept up to date from the
//! same events the UI shows: each committed epoch's progress record and the executor reports.
//!
//! Counters add up what progress records say, so a scrape agrees with the checkpoint's
//! `progress/N` of the same epochs.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::driver::events::ExecutorStatus;
use crate::driver::EpochProgress;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn epoch_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    epochs_committed: Counter,
    epoch_duration: Family<Labels, Histogram, fn() -> Histogram>,
    input_records: Family<Labels, Counter>,
    source_lag: Family<Labels, Gauge>,
    sink_rows: Family<Labels, Counter>,
    dead_letters: Family<Labels, Counter>,
    skipped: Family<Labels, Counter>,
    late: Counter,
    spilled: Counter,
    pool_peak: Gauge,
    executors: Gauge,
    executor_rss: Family<Labels, Gauge>,
    task_attempts: Family<Labels, Counter>,
    lost_executors: Counter,
    state_rows: Family<Labels, Gauge>,
    state_bytes: Family<Labels, Gauge>,
    last_epoch: Gauge,
    watermark: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics, at zero.
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            epochs_committed: Counter::default(),
            epoch_duration: Family::new_with_constructor(epoch_histogram as fn() -> Histogram),
            input_records: Family::default(),
            source_lag: Family::default(),
            sink_rows: Family::default(),
            dead_letters: Family::default(),
            skipped: Family::default(),
            late: Counter::default(),
            spilled: Counter::default(),
            pool_peak: Gauge::default(),
            executors: Gauge::default(),
            executor_rss: Family::default(),
            task_attempts: Family::default(),
            lost_executors: Counter::default(),
            state_rows: Family::default(),
            state_bytes: Family::default(),
            last_epoch: Gauge::default(),
            watermark: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "sluice_epochs_committed",
            "Epochs committed by this driver",
            m.epochs_committed.clone(),
        );
        r.register(
            "sluice_epoch_duration_seconds",
            "Duration of each committed epoch's phases (offset_planning, offsets_write, execution, sink_commit, commit_write) and of the whole epoch (total)",
            m.epoch_duration.clone(),
        );
        r.register(
            "sluice_input_records",
            "Records read from each source table (rows plus bad records set aside)",
            m.input_records.clone(),
        );
        r.register(
            "sluice_source_lag_records",
            "Records available in each Kafka partition beyond the last committed epoch's end",
            m.source_lag.clone(),
        );
        r.register(
            "sluice_sink_rows",
            "Rows delivered to each table written",
            m.sink_rows.clone(),
        );
        r.register(
            "sluice_dead_letter_records",
            "Bad records of each source table sent to its dead-letter table",
            m.dead_letters.clone(),
        );
        r.register(
            "sluice_skipped_records",
            "Bad records of each source table skipped",
            m.skipped.clone(),
        );
        r.register(
            "sluice_late_records",
            "Rows dropped for arriving behind the watermark",
            m.late.clone(),
        );
        r.register(
            "sluice_spilled_bytes",
            "Bytes operators spilled to executors' disks over their share of the memory pool",
            m.spilled.clone(),
        );
        r.register(
            "sluice_memory_pool_peak_bytes",
            "The most an executor's memory pool has held at once (the largest of the last epoch's executors)",
            m.pool_peak.clone(),
        );
        r.register(
            "sluice_executors",
            "Executors taking part in the query",
            m.executors.clone(),
        );
        r.register(
            "sluice_executor_rss_bytes",
            "Resident set size of each executor at its last heartbeat",
            m.executor_rss.clone(),
        );
        r.register(
            "sluice_task_attempts",
            "Task attempts by outcome (succeeded, failed, fetch_failed, executor_lost, output_lost, superseded)",
            m.task_attempts.clone(),
        );
        r.register(
            "sluice_lost_executors",
            "Executors declared lost",
            m.lost_executors.clone(),
        );
        r.register(
            "sluice_state_rows",
            "Keys held by each stateful operator after the last epoch",
            m.state_rows.clone(),
        );
        r.register(
            "sluice_state_bytes",
            "Bytes of SST files each stateful operator's last snapshot references",
            m.state_bytes.clone(),
        );
        r.register(
            "sluice_last_committed_epoch",
            "The last epoch committed",
            m.last_epoch.clone(),
        );
        r.register(
            "sluice_watermark_milliseconds",
            "The watermark the last epoch ran with (ms since the Unix epoch)",
            m.watermark.clone(),
        );
        m
    }

    /// Adds a committed epoch's progress record.
    pub fn epoch(&self, p: &EpochProgress) {
        self.epochs_committed.inc();
        self.last_epoch.set(p.epoch as i64);
        self.spilled.inc_by(p.spilled_bytes);
        self.pool_peak.set(p.peak_pool_bytes as i64);
        if let Some(w) = p.watermark_ms {
            self.watermark.set(w);
        }
        let d = &p.duration_ms;
        for (phase, ms) in [
            ("offset_planning", d.offset_planning),
            ("offsets_write", d.offsets_write),
            ("execution", d.execution),
            ("sink_commit", d.sink_commit),
            ("commit_write", d.commit_write),
            ("total", d.total),
        ] {
            self.epoch_duration
                .get_or_create(&labels(&[("phase", phase)]))
                .observe(ms / 1e3);
        }
        for (table, s) in &p.sources {
            let t = labels(&[("table", table)]);
            self.input_records
                .get_or_create(&t)
                .inc_by(s.input_rows + s.skipped_records + s.dead_lettered_records);
            self.skipped.get_or_create(&t).inc_by(s.skipped_records);
            self.dead_letters
                .get_or_create(&t)
                .inc_by(s.dead_lettered_records);
            for part in &s.partitions {
                self.source_lag
                    .get_or_create(&labels(&[
                        ("table", table),
                        ("partition", &part.partition.to_string()),
                    ]))
                    .set(part.lag);
            }
        }
        for (table, s) in &p.sinks {
            self.sink_rows
                .get_or_create(&labels(&[("table", table)]))
                .inc_by(s.rows);
        }
        self.late.inc_by(p.late_records);
        for (outcome, n) in &p.task_outcomes {
            self.task_attempts
                .get_or_create(&labels(&[("outcome", outcome)]))
                .inc_by(*n);
        }
        self.lost_executors.inc_by(p.lost_executors.len() as u64);
        for op in &p.state {
            let o = labels(&[("operator", &op.operator.to_string())]);
            self.state_rows.get_or_create(&o).set(op.rows_total as i64);
            self.state_bytes
                .get_or_create(&o)
                .set(op.state_bytes as i64);
        }
    }

    /// The executors now.
    pub fn executors(&self, executors: &[ExecutorStatus]) {
        self.executors.set(executors.len() as i64);
        self.executor_rss.clear();
        for e in executors {
            self.executor_rss
                .get_or_create(&labels(&[("executor", &e.name)]))
                .set(e.rss_bytes as i64);
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
