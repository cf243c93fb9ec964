//! The Kafka source.
//!
//! The driver decides what every epoch reads: a fixed `[start, end)` offset range per
//! partition ([`plan_ranges`], a pure function over broker watermarks and the previous epoch's
//! position). The range is written to the checkpoint's offsets log before any task runs, so
//! the offsets log — not consumer-group commits — is the truth, and a replay reads exactly the
//! same records. Partitions are *assigned* (never subscribed): no group rebalances.
//!
//! Executors read a range with a fresh `BaseConsumer` per split and decode records straight into Arrow
//! arrays: `raw` appends key/value/coordinates to array builders, `json` feeds values to
//! arrow-json's push decoder built for the declared (projected) schema. A record that does not
//! decode is handled by the source's policy: `fail` names topic, partition and offset; `skip`
//! counts it; `dead_letter` writes the raw record, its coordinates and the error to a Parquet
//! dead-letter table under a name fixed by (query, epoch, topic, partition, range), so a replay
//! rewrites the same file instead of adding one.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{ConnectorError, Result};
use crate::options::{BadRecordPolicy, KafkaFormat, KafkaSourceSpec, StartPosition};
use crate::{
    KafkaEndpoint, KafkaSplit, OffsetGap, PlanRequest, ReadContext, ReadCounters, Source,
    SourceEpoch, Split, SplitReader,
};

/// Records per batch produced by a reader.
pub const BATCH_RECORDS: usize = 8192;
/// How long metadata and watermark requests may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The columns of a `raw` Kafka table.
pub fn raw_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
    ]))
}

/// The columns of a dead-letter table.
pub fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("error", DataType::Utf8, false),
        Field::new("epoch", DataType::Int64, false),
    ]))
}

/// A Kafka topic as a source.
pub struct KafkaSource {
    spec: KafkaSourceSpec,
    schema: SchemaRef,
    /// The driver's metadata client, created on first use.
    admin: Mutex<Option<BaseConsumer>>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("topic", &self.spec.topic)
            .finish()
    }
}

impl KafkaSource {
    /// A source reading `spec` into `schema` (the declared columns for `json`, [`raw_schema`]
    /// for `raw`).
    pub fn new(spec: KafkaSourceSpec, schema: SchemaRef) -> Self {
        Self {
            spec,
            schema,
            admin: Mutex::new(None),
        }
    }

    /// The source's spec.
    pub fn spec(&self) -> &KafkaSourceSpec {
        &self.spec
    }

    fn error(&self, message: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Kafka {
            bootstrap_servers: self.spec.bootstrap_servers.clone(),
            topic: self.spec.topic.clone(),
            message: message.to_string(),
        }
    }

    fn with_admin<T>(&self, f: impl FnOnce(&BaseConsumer) -> Result<T>) -> Result<T> {
        let mut guard = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(
                client_config(&self.spec)
                    .create::<BaseConsumer>()
                    .map_err(|e| self.error(format!("cannot create a client: {e}")))?,
            );
        }
        f(guard.as_ref().expect("created above"))
    }

    /// Every partition of the topic with its low and high watermark.
    pub fn watermarks(&self) -> Result<Vec<PartitionState>> {
        self.with_admin(|c| partition_states(c, &self.spec))
    }

    fn initial_offsets(&self, partitions: &[PartitionState]) -> Result<BTreeMap<i32, i64>> {
        Ok(match &self.spec.start {
            StartPosition::Earliest => partitions.iter().map(|p| (p.partition, p.low)).collect(),
            StartPosition::Latest => partitions.iter().map(|p| (p.partition, p.high)).collect(),
            StartPosition::Offsets(given) => partitions
                .iter()
                .map(|p| {
                    (
                        p.partition,
                        given.get(&p.partition).copied().unwrap_or(p.low),
                    )
                })
                .collect(),
            StartPosition::Timestamp(ts) => {
                let mut tpl = TopicPartitionList::new();
                for p in partitions {
                    tpl.add_partition_offset(&self.spec.topic, p.partition, Offset::Offset(*ts))
                        .map_err(|e| self.error(e))?;
                }
                let found = self.with_admin(|c| {
                    c.offsets_for_times(tpl, METADATA_TIMEOUT)
                        .map_err(|e| self.error(format!("looking up offsets for time {ts}: {e}")))
                })?;
                let mut out = BTreeMap::new();
                for elem in found.elements() {
                    let high = partitions
                        .iter()
                        .find(|p| p.partition == elem.partition())
                        .map(|p| p.high)
                        .unwrap_or(0);
                    let offset = match elem.offset() {
                        Offset::Offset(o) => o,
                        // No record at or after the timestamp: start at the end.
                        _ => high,
                    };
                    out.insert(elem.partition(), offset);
                }
                out
            }
        })
    }
}

impl Source for KafkaSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn bounded(&self) -> bool {
        false
    }

    fn plan_epoch(&self, request: &PlanRequest<'_>) -> Result<SourceEpoch> {
        let partitions = self.watermarks()?;
        let initial = match request.previous {
            Some(_) => BTreeMap::new(),
            None => self.initial_offsets(&partitions)?,
        };
        let mut epoch = plan_ranges(&RangeInputs {
            topic: &self.spec.topic,
            partitions: &partitions,
            previous: request.previous.map(|p| &p.position),
            initial: &initial,
            limit: if request.respect_limit {
                self.spec.max_records_per_trigger
            } else {
                None
            },
            until: request.until,
            on_lost: self.spec.on_offsets_lost,
        })?;
        epoch.kafka = Some(KafkaEndpoint {
            bootstrap_servers: self.spec.bootstrap_servers.clone(),
            topic: self.spec.topic.clone(),
        });
        Ok(epoch)
    }

    fn on_commit(&self, epoch: &SourceEpoch) -> Result<()> {
        report_to_group(&self.spec, &epoch.position)
    }

    fn available_end(&self) -> Result<Option<BTreeMap<i32, i64>>> {
        Ok(Some(
            self.watermarks()?
                .into_iter()
                .map(|p| (p.partition, p.high))
                .collect(),
        ))
    }

    fn open(
        &self,
        split: &Split,
        projection: Option<&[usize]>,
        ctx: &ReadContext,
    ) -> Result<Box<dyn SplitReader>> {
        let Split::Kafka(split) = split else {
            return Err(ConnectorError::InvalidOptions {
                table: self.spec.table.clone(),
                message: format!("a kafka source was handed a non-kafka split: {split:?}"),
            });
        };
        let target = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let decoding = match self.spec.format {
            KafkaFormat::Raw => Decoding::Raw {
                projection: projection.map(|p| p.to_vec()),
            },
            KafkaFormat::Json => Decoding::Json,
        };
        let consumer = SplitConsumer::take(&self.spec)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&split.topic, split.partition, Offset::Offset(split.start))
            .map_err(|e| self.error(e))?;
        consumer
            .get()
            .assign(&tpl)
            .map_err(|e| self.error(format!("assigning partition {}: {e}", split.partition)))?;
        let dead_letters = match (self.spec.on_bad_record, &self.spec.dead_letter_path) {
            (BadRecordPolicy::DeadLetter, Some(dir)) => {
                Some(DeadLetters::new(PathBuf::from(dir), ctx, split))
            }
            _ => None,
        };
        Ok(Box::new(KafkaReader {
            spec: self.spec.clone(),
            consumer: Some(consumer),
            split: split.clone(),
            next: split.start,
            decoding,
            schema: target,
            dead_letters,
            counters: ReadCounters::default(),
            values: Vec::new(),
            records: Vec::new(),
        }))
    }
}

/// One partition as the broker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionState {
    /// The partition.
    pub partition: i32,
    /// The oldest retained offset.
    pub low: i64,
    /// One past the newest offset.
    pub high: i64,
}

/// Partitions and watermarks of `spec`'s topic.
fn partition_states(
    consumer: &BaseConsumer,
    spec: &KafkaSourceSpec,
) -> Result<Vec<PartitionState>> {
    let error = |message: String| ConnectorError::Kafka {
        bootstrap_servers: spec.bootstrap_servers.clone(),
        topic: spec.topic.clone(),
        message,
    };
    let metadata = consumer
        .fetch_metadata(Some(&spec.topic), METADATA_TIMEOUT)
        .map_err(|e| error(format!("cannot fetch metadata: {e}")))?;
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == spec.topic)
        .ok_or_else(|| error("the broker returned no metadata for the topic".into()))?;
    if let Some(e) = topic.error() {
        let e = rdkafka::error::RDKafkaErrorCode::from(e);
        return Err(error(
            if e == rdkafka::error::RDKafkaErrorCode::UnknownTopicOrPartition {
                "the topic does not exist (create it first)".into()
            } else {
                format!("metadata error: {e}")
            },
        ));
    }
    if topic.partitions().is_empty() {
        return Err(error("the topic does not exist (create it first)".into()));
    }
    let mut out = Vec::with_capacity(topic.partitions().len());
    for p in topic.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(&spec.topic, p.id(), METADATA_TIMEOUT)
            .map_err(|e| {
                error(format!(
                    "cannot fetch watermarks of partition {}: {e}",
                    p.id()
                ))
            })?;
        out.push(PartitionState {
            partition: p.id(),
            low,
            high,
        });
    }
    out.sort_by_key(|p| p.partition);
    Ok(out)
}

/// Each partition's low and high watermark, for `sluice checkpoint inspect`.
pub fn high_watermarks(endpoint: &KafkaEndpoint) -> Result<BTreeMap<i32, i64>> {
    let spec = KafkaSourceSpec {
        table: String::new(),
        bootstrap_servers: endpoint.bootstrap_servers.clone(),
        topic: endpoint.topic.clone(),
        format: KafkaFormat::Raw,
        start: StartPosition::Earliest,
        max_records_per_trigger: None,
        on_bad_record: BadRecordPolicy::Fail,
        dead_letter_path: None,
        on_offsets_lost: BadRecordPolicy::Fail,
        group_id: None,
        properties: BTreeMap::new(),
        read_timeout_ms: 5_000,
    };
    let source = KafkaSource::new(spec, raw_schema());
    Ok(source
        .watermarks()?
        .into_iter()
        .map(|p| (p.partition, p.high))
        .collect())
}

/// Reports a committed position to `group_id`, for monitoring tools that read consumer-group
/// offsets. Best effort: the checkpoint stays the truth.
pub fn report_to_group(spec: &KafkaSourceSpec, position: &BTreeMap<i32, i64>) -> Result<()> {
    let Some(group) = &spec.group_id else {
        return Ok(());
    };
    let error = |message: String| ConnectorError::Kafka {
        bootstrap_servers: spec.bootstrap_servers.clone(),
        topic: spec.topic.clone(),
        message,
    };
    let mut config = client_config(spec);
    config.set("group.id", group);
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| error(format!("cannot create a client: {e}")))?;
    let mut tpl = TopicPartitionList::new();
    for (p, o) in position {
        tpl.add_partition_offset(&spec.topic, *p, Offset::Offset(*o))
            .map_err(|e| error(e.to_string()))?;
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(|e| error(format!("committing offsets to group '{group}': {e}")))
}

/// What [`plan_ranges`] decides from.
#[derive(Debug)]
pub struct RangeInputs<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Every partition with its watermarks.
    pub partitions: &'a [PartitionState],
    /// The previous epoch's position (`None` for the query's first epoch).
    pub previous: Option<&'a BTreeMap<i32, i64>>,
    /// Where each partition starts in the first epoch (from the `start` option).
    pub initial: &'a BTreeMap<i32, i64>,
    /// Most records this epoch reads across partitions.
    pub limit: Option<u64>,
    /// Read no further than this (`--trigger available-now`).
    pub until: Option<&'a BTreeMap<i32, i64>>,
    /// What to do when unread offsets are gone.
    pub on_lost: BadRecordPolicy,
}

/// Decides an epoch's offset ranges. Pure, so every case is unit-tested.
///
/// - A partition with a recorded position continues from it; a partition first seen after the
///   first epoch (added to the topic) starts at its earliest offset.
/// - A position below the partition's low watermark (deleted by retention) or above its high
///   watermark (topic truncated or recreated) is an error under `fail`; under `skip` reading
///   resumes at the low watermark and the gap is recorded.
/// - `limit` is shared across partitions in proportion to their backlog.
pub fn plan_ranges(inputs: &RangeInputs<'_>) -> Result<SourceEpoch> {
    let mut epoch = SourceEpoch::default();
    let mut starts = Vec::with_capacity(inputs.partitions.len());
    for p in inputs.partitions {
        let from = match inputs.previous {
            Some(prev) => prev.get(&p.partition).copied().unwrap_or(p.low),
            None => inputs.initial.get(&p.partition).copied().unwrap_or(p.low),
        };
        let lost = if from < p.low {
            Some(format!(
                "offsets {from}..{} were deleted by retention before the query read them",
                p.low
            ))
        } else if from > p.high {
            Some(format!(
                "the query's next offset is {from} but the partition ends at {} (was the topic truncated or recreated?)",
                p.high
            ))
        } else {
            None
        };
        let from = match lost {
            None => from,
            Some(reason) => match inputs.on_lost {
                BadRecordPolicy::Skip => {
                    epoch.gaps.push(OffsetGap {
                        topic: inputs.topic.to_string(),
                        partition: p.partition,
                        expected: from,
                        resumed_at: p.low,
                        reason,
                    });
                    p.low
                }
                _ => {
                    return Err(ConnectorError::OffsetsLost {
                        topic: inputs.topic.to_string(),
                        partition: p.partition,
                        message: format!(
                            "{reason}; set on_offsets_lost = 'skip' to continue from offset {} and record the gap",
                            p.low
                        ),
                    })
                }
            },
        };
        let mut end = p.high;
        if let Some(until) = inputs.until {
            end = end.min(until.get(&p.partition).copied().unwrap_or(from).max(from));
        }
        starts.push((p.partition, from, end.max(from)));
    }
    let backlog: u64 = starts.iter().map(|(_, f, e)| (e - f) as u64).sum();
    let takes: Vec<u64> = match inputs.limit {
        Some(limit) if backlog > limit => {
            let mut takes: Vec<u64> = starts
                .iter()
                .map(|(_, f, e)| ((e - f) as u128 * limit as u128 / backlog as u128) as u64)
                .collect();
            let mut left = limit - takes.iter().sum::<u64>();
            for (i, (_, f, e)) in starts.iter().enumerate() {
                if left == 0 {
                    break;
                }
                if takes[i] < (e - f) as u64 {
                    takes[i] += 1;
                    left -= 1;
                }
            }
            takes
        }
        _ => starts.iter().map(|(_, f, e)| (e - f) as u64).collect(),
    };
    for ((partition, from, _), take) in starts.into_iter().zip(takes) {
        let end = from + take as i64;
        if end > from {
            epoch.splits.push(Split::Kafka(KafkaSplit {
                topic: inputs.topic.to_string(),
                partition,
                start: from,
                end,
            }));
        }
        epoch.position.insert(partition, end);
    }
    epoch.available = inputs
        .partitions
        .iter()
        .map(|p| (p.partition, p.high))
        .collect();
    Ok(epoch)
}

fn client_config(spec: &KafkaSourceSpec) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &spec.bootstrap_servers)
        .set("group.id", "sluice")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Never jump silently: an offset that vanished between planning and reading is an error.
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        .set("client.id", "sluice");
    for (k, v) in &spec.properties {
        config.set(k, v);
    }
    config
}

/// A consumer for one split. Each reader gets a fresh one: a reused consumer could deliver
/// records prefetched for an earlier assignment, and a stale one beyond the range would look
/// like its end.
struct SplitConsumer {
    consumer: BaseConsumer,
}

impl SplitConsumer {
    fn take(spec: &KafkaSourceSpec) -> Result<Self> {
        let consumer =
            client_config(spec)
                .create::<BaseConsumer>()
                .map_err(|e| ConnectorError::Kafka {
                    bootstrap_servers: spec.bootstrap_servers.clone(),
                    topic: spec.topic.clone(),
                    message: format!("cannot create a consumer: {e}"),
                })?;
        Ok(Self { consumer })
    }

    fn get(&self) -> &BaseConsumer {
        &self.consumer
    }
}

enum Decoding {
    Raw { projection: Option<Vec<usize>> },
    Json,
}

/// A record's coordinates while its batch is being decoded.
struct RecordMeta {
    offset: i64,
    timestamp: Option<i64>,
    /// Byte range of the value in the reader's value buffer (`None`: no value).
    value: Option<(usize, usize)>,
    key: Option<Vec<u8>>,
}

/// Reads one [`KafkaSplit`].
struct KafkaReader {
    spec: KafkaSourceSpec,
    consumer: Option<SplitConsumer>,
    split: KafkaSplit,
    /// The next offset expected.
    next: i64,
    decoding: Decoding,
    schema: SchemaRef,
    dead_letters: Option<DeadLetters>,
    counters: ReadCounters,
    /// Values of the batch being collected, back to back (reused across batches).
    values: Vec<u8>,
    records: Vec<RecordMeta>,
}

impl KafkaReader {
    fn error(&self, message: String) -> ConnectorError {
        ConnectorError::Kafka {
            bootstrap_servers: self.spec.bootstrap_servers.clone(),
            topic: self.split.topic.clone(),
            message: format!("partition {}: {message}", self.split.partition),
        }
    }

    /// Polls records into the buffers until a batch is full or the range is read.
    fn collect(&mut self, raw: &mut Option<RawBuilders>) -> Result<()> {
        let timeout = Duration::from_millis(self.spec.read_timeout_ms);
        let mut last_progress = Instant::now();
        let keep_keys = self.dead_letters.is_some();
        let consumer = self.consumer.as_ref().expect("open while reading");
        while self.next < self.split.end && self.records.len() < BATCH_RECORDS {
            match consumer.get().poll(Duration::from_millis(100)) {
                Some(Ok(msg)) => {
                    let offset = msg.offset();
                    if offset < self.next {
                        continue;
                    }
                    if offset >= self.split.end {
                        self.next = self.split.end;
                        break;
                    }
                    self.next = offset + 1;
                    last_progress = Instant::now();
                    let timestamp = msg.timestamp().to_millis();
                    if let Some(raw) = raw.as_mut() {
                        raw.append(&msg, &self.split.topic);
                        self.records.push(RecordMeta {
                            offset,
                            timestamp,
                            value: None,
                            key: None,
                        });
                        continue;
                    }
                    let value = msg.payload().map(|v| {
                        let start = self.values.len();
                        self.values.extend_from_slice(v);
                        self.values.push(b'\n');
                        (start, v.len())
                    });
                    self.records.push(RecordMeta {
                        offset,
                        timestamp,
                        value,
                        key: if keep_keys {
                            msg.key().map(|k| k.to_vec())
                        } else {
                            None
                        },
                    });
                }
                Some(Err(e)) => {
                    return Err(self.error(format!("reading at offset {}: {e}", self.next)));
                }
                None => {
                    // Offsets can be missing from a range (transaction markers, compaction):
                    // the consumer's position says whether anything is left.
                    let position = consumer.get().position().ok().and_then(|tpl| {
                        tpl.find_partition(&self.split.topic, self.split.partition)
                            .map(|e| e.offset())
                    });
                    if let Some(Offset::Offset(p)) = position {
                        if p >= self.split.end {
                            self.next = self.split.end;
                            break;
                        }
                    }
                    if last_progress.elapsed() > timeout {
                        return Err(self.error(format!(
                            "no record at offset {} within {} ms although the epoch's range [{}, {}) was on the broker when planned",
                            self.next, self.spec.read_timeout_ms, self.split.start, self.split.end
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Decodes the collected JSON values; bad records go to the policy.
    fn decode_json(&mut self) -> Result<RecordBatch> {
        let mut good: Vec<usize> = Vec::with_capacity(self.records.len());
        let mut bad: Vec<(usize, String)> = Vec::new();
        for (i, r) in self.records.iter().enumerate() {
            match r.value {
                Some(_) => good.push(i),
                None => bad.push((i, "the record has no value".into())),
            }
        }
        let batch = match self.decode_values(&good) {
            Ok(batch) => batch,
            Err(_) => {
                // Find the culprits one by one (only on this slow path), then decode the rest.
                let mut ok = Vec::with_capacity(good.len());
                for &i in &good {
                    match self.decode_values(&[i]) {
                        Ok(_) => ok.push(i),
                        Err(e) => bad.push((i, e)),
                    }
                }
                self.decode_values(&ok).map_err(|e| self.error(e))?
            }
        };
        bad.sort_by_key(|(i, _)| *i);
        for (i, message) in bad {
            let record = &self.records[i];
            match self.spec.on_bad_record {
                BadRecordPolicy::Fail => {
                    return Err(ConnectorError::BadMessage {
                        topic: self.split.topic.clone(),
                        partition: self.split.partition,
                        offset: record.offset,
                        message: format!(
                            "{message} (set on_bad_record = 'skip' or 'dead_letter' to continue past bad records)"
                        ),
                    })
                }
                BadRecordPolicy::Skip => self.counters.skipped += 1,
                BadRecordPolicy::DeadLetter => {
                    let value = record
                        .value
                        .map(|(start, len)| &self.values[start..start + len]);
                    if let Some(dl) = self.dead_letters.as_mut() {
                        dl.push(record, value, &message);
                    }
                    self.counters.dead_lettered += 1;
                }
            }
        }
        Ok(batch)
    }

    /// Decodes the values of `records` (indices) into one batch, or says why not.
    fn decode_values(&self, records: &[usize]) -> std::result::Result<RecordBatch, String> {
        let mut decoder = arrow::json::ReaderBuilder::new(self.schema.clone())
            .with_batch_size(records.len().max(1))
            .build_decoder()
            .map_err(|e| e.to_string())?;
        for (n, &i) in records.iter().enumerate() {
            let (start, len) = self.records[i].value.expect("only records with values");
            let bytes = &self.values[start..start + len + 1];
            let used = decoder.decode(bytes).map_err(|e| e.to_string())?;
            if used != bytes.len() || decoder.has_partial_record() {
                return Err("incomplete JSON value".into());
            }
            if decoder.len() != n + 1 {
                return Err(if decoder.len() <= n {
                    "the value holds no JSON object".into()
                } else {
                    "the value holds more than one JSON value".into()
                });
            }
        }
        match decoder.flush().map_err(|e| e.to_string())? {
            Some(batch) => Ok(batch),
            None => Ok(RecordBatch::new_empty(self.schema.clone())),
        }
    }
}

impl SplitReader for KafkaReader {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if self.next >= self.split.end {
                if let Some(dl) = self.dead_letters.take() {
                    dl.finish()?;
                }
                self.consumer = None; // closes the connection
                return Ok(None);
            }
            self.values.clear();
            self.records.clear();
            let mut raw = match self.decoding {
                Decoding::Raw { .. } => Some(RawBuilders::default()),
                Decoding::Json => None,
            };
            self.collect(&mut raw)?;
            if self.records.is_empty() {
                continue;
            }
            let batch = match (&self.decoding, raw) {
                (Decoding::Raw { projection }, Some(raw)) => {
                    let batch = raw.finish()?;
                    match projection {
                        Some(p) => batch.project(p)?,
                        None => batch,
                    }
                }
                _ => self.decode_json()?,
            };
            if batch.num_rows() > 0 {
                return Ok(Some(batch));
            }
        }
    }

    fn counters(&self) -> ReadCounters {
        self.counters
    }
}

/// Array builders of the `raw` format.
#[derive(Default)]
struct RawBuilders {
    key: BinaryBuilder,
    value: BinaryBuilder,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
}

impl RawBuilders {
    fn append<M: Message>(&mut self, msg: &M, topic: &str) {
        self.key.append_option(msg.key());
        self.value.append_option(msg.payload());
        self.topic.append_value(topic);
        self.partition.append_value(msg.partition());
        self.offset.append_value(msg.offset());
        self.timestamp.append_option(msg.timestamp().to_millis());
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.timestamp.finish()),
        ];
        Ok(RecordBatch::try_new(raw_schema(), columns)?)
    }
}

/// The dead letters of one split, written as one Parquet file when the split is read.
struct DeadLetters {
    dir: PathBuf,
    name: String,
    epoch: i64,
    topic: String,
    partition: i32,
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    key: BinaryBuilder,
    value: BinaryBuilder,
    error: StringBuilder,
    rows: usize,
}

impl DeadLetters {
    fn new(dir: PathBuf, ctx: &ReadContext, split: &KafkaSplit) -> Self {
        let query: String = ctx.query_id.chars().take(8).collect();
        let topic: String = split
            .topic
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            dir,
            // Fixed by (query, epoch, topic, partition, range): a replay rewrites this file.
            name: format!(
                "dead-{query}-e{:06}-{topic}-p{}-{}.parquet",
                ctx.epoch.0, split.partition, split.start
            ),
            epoch: ctx.epoch.0 as i64,
            topic: split.topic.clone(),
            partition: split.partition,
            offset: Int64Builder::new(),
            timestamp: TimestampMillisecondBuilder::new(),
            key: BinaryBuilder::new(),
            value: BinaryBuilder::new(),
            error: StringBuilder::new(),
            rows: 0,
        }
    }

    fn push(&mut self, record: &RecordMeta, value: Option<&[u8]>, error: &str) {
        self.offset.append_value(record.offset);
        self.timestamp.append_option(record.timestamp);
        self.key.append_option(record.key.as_deref());
        self.value.append_option(value);
        self.error.append_value(error);
        self.rows += 1;
    }

    fn finish(mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let n = self.rows;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArrayOf::repeat(&self.topic, n)),
            Arc::new(arrow::array::Int32Array::from(vec![self.partition; n])),
            Arc::new(self.offset.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.error.finish()),
            Arc::new(arrow::array::Int64Array::from(vec![self.epoch; n])),
        ];
        let batch = RecordBatch::try_new(dead_letter_schema(), columns)?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| ConnectorError::io("create", &self.dir, e))?;
        let path = self.dir.join(&self.name);
        let tmp = self.dir.join(format!(".{}.tmp", self.name));
        let parquet_err = |source| ConnectorError::Parquet {
            path: tmp.clone(),
            source,
        };
        let file = File::create(&tmp).map_err(|e| ConnectorError::io("create", &tmp, e))?;
        let mut writer =
            ArrowWriter::try_new(file, dead_letter_schema(), None).map_err(parquet_err)?;
        writer.write(&batch).map_err(parquet_err)?;
        let file = writer.into_inner().map_err(parquet_err)?;
        file.sync_all()
            .map_err(|e| ConnectorError::io("sync", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| ConnectorError::io("rename into place", &path, e))
    }
}

/// A string column holding one value `n` times.
struct StringArrayOf;

impl StringArrayOf {
    fn repeat(value: &str, n: usize) -> arrow::array::StringArray {
        arrow::array::StringArray::from_iter_values(std::iter::repeat_n(value, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(list: &[(i32, i64, i64)]) -> Vec<PartitionState> {
        list.iter()
            .map(|&(partition, low, high)| PartitionState {
                partition,
                low,
                high,
            })
            .collect()
    }

    fn ranges(epoch: &SourceEpoch) -> Vec<(i32, i64, i64)> {
        epoch
            .splits
            .iter()
            .map(|s| match s {
                Split::Kafka(k) => (k.partition, k.start, k.end),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn inputs<'a>(
        partitions: &'a [PartitionState],
        previous: Option<&'a BTreeMap<i32, i64>>,
        initial: &'a BTreeMap<i32, i64>,
    ) -> RangeInputs<'a> {
        RangeInputs {
            topic: "t",
            partitions,
            previous,
            initial,
            limit: None,
            until: None,
            on_lost: BadRecordPolicy::Fail,
        }
    }

    #[test]
    fn first_epoch_reads_from_the_start_and_later_ones_continue() {
        let p = parts(&[(0, 0, 10), (1, 5, 8)]);
        let initial = [(0, 0), (1, 5)].into();
        let e0 = plan_ranges(&inputs(&p, None, &initial)).unwrap();
        assert_eq!(ranges(&e0), vec![(0, 0, 10), (1, 5, 8)]);
        let p = parts(&[(0, 0, 12), (1, 5, 8), (2, 0, 3)]);
        let e1 = plan_ranges(&inputs(&p, Some(&e0.position), &initial)).unwrap();
        // Partition 1 has nothing new; partition 2 was added and starts at its earliest.
        assert_eq!(ranges(&e1), vec![(0, 10, 12), (2, 0, 3)]);
        assert_eq!(e1.position, [(0, 12), (1, 8), (2, 3)].into());
    }

    #[test]
    fn the_limit_is_shared_by_backlog_and_never_exceeded() {
        let p = parts(&[(0, 0, 900), (1, 0, 100), (2, 0, 0)]);
        let initial = BTreeMap::new();
        let mut i = inputs(&p, None, &initial);
        i.limit = Some(101);
        let e = plan_ranges(&i).unwrap();
        let total: i64 = ranges(&e).iter().map(|(_, s, e)| e - s).sum();
        assert_eq!(total, 101);
        assert_eq!(ranges(&e), vec![(0, 0, 91), (1, 0, 10)]);
    }

    #[test]
    fn available_now_stops_at_the_captured_end() {
        let p = parts(&[(0, 0, 50), (1, 0, 50)]);
        let initial = BTreeMap::new();
        let until = [(0, 30)].into();
        let mut i = inputs(&p, None, &initial);
        i.until = Some(&until);
        let e = plan_ranges(&i).unwrap();
        // Partition 1 appeared after the backlog was captured: nothing of it now.
        assert_eq!(ranges(&e), vec![(0, 0, 30)]);
    }

    #[test]
    fn lost_offsets_fail_or_are_recorded() {
        let p = parts(&[(0, 40, 50), (1, 0, 5)]);
        let previous = [(0, 20), (1, 9)].into();
        let initial = BTreeMap::new();
        let err = plan_ranges(&inputs(&p, Some(&previous), &initial)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("partition 0") && text.contains("20..40"),
            "{text}"
        );
        let mut i = inputs(&p, Some(&previous), &initial);
        i.on_lost = BadRecordPolicy::Skip;
        let e = plan_ranges(&i).unwrap();
        assert_eq!(ranges(&e), vec![(0, 40, 50), (1, 0, 5)]);
        assert_eq!(e.gaps.len(), 2);
        assert_eq!((e.gaps[0].expected, e.gaps[0].resumed_at), (20, 40));
        assert_eq!((e.gaps[1].expected, e.gaps[1].resumed_at), (9, 0));
        assert!(e.gaps[1].reason.contains("truncated or recreated"));
    }
}
