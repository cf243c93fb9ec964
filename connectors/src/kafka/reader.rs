//! Reading one offset range: a fresh consumer, decoding into Arrow, bad-record policies.

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::Offset;

use super::{client_config, dead_letter_schema, raw_schema, topic_is_compacted, BATCH_RECORDS};
use crate::error::{ConnectorError, Result};
use crate::options::{BadRecordPolicy, KafkaSourceSpec};
use crate::{KafkaSplit, OffsetGap, ReadContext, ReadCounters, SplitReader};

/// A consumer for one split. Each reader gets a fresh one: a reused consumer could deliver
/// records prefetched for an earlier assignment, and a stale one beyond the range would look
/// like its end.
pub(super) struct SplitConsumer {
    consumer: BaseConsumer,
}

impl SplitConsumer {
    pub(super) fn take(spec: &KafkaSourceSpec) -> Result<Self> {
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

    pub(super) fn get(&self) -> &BaseConsumer {
        &self.consumer
    }
}

pub(super) enum Decoding {
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
pub(super) struct KafkaReader {
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
    /// Offsets of the range that no record answered, as runs `[from, to)` in offset order;
    /// accounted for when the range is read ([`KafkaReader::account_for_missing`]).
    missing: Vec<(i64, i64)>,
}

impl KafkaReader {
    pub(super) fn new(
        spec: KafkaSourceSpec,
        consumer: SplitConsumer,
        split: KafkaSplit,
        decoding: Decoding,
        schema: SchemaRef,
        dead_letters: Option<DeadLetters>,
    ) -> Self {
        Self {
            spec,
            consumer: Some(consumer),
            next: split.start,
            split,
            decoding,
            schema,
            dead_letters,
            counters: ReadCounters::default(),
            values: Vec::new(),
            records: Vec::new(),
            missing: Vec::new(),
        }
    }

    /// Accounts for every offset of the range that held no record, once the range is read:
    /// explained by the topic's compaction or declared transactions (counted), or lost — which
    /// fails the read under `on_offsets_lost = 'fail'` and is recorded as gaps under `skip`.
    fn account_for_missing(&mut self) -> Result<()> {
        let runs = std::mem::take(&mut self.missing);
        let total: u64 = runs.iter().map(|(a, b)| (b - a) as u64).sum();
        if total == 0 {
            return Ok(());
        }
        if self.spec.transactional {
            self.counters.transaction_offsets += total;
            return Ok(());
        }
        if topic_is_compacted(&self.spec, &self.split.topic)? {
            self.counters.compacted_offsets += total;
            return Ok(());
        }
        match self.spec.on_offsets_lost {
            BadRecordPolicy::Skip => {
                tracing::warn!(
                    topic = %self.split.topic,
                    partition = self.split.partition,
                    offsets = total,
                    "offsets of the epoch's range held no record: recorded as lost (on_offsets_lost = 'skip')"
                );
                self.counters.lost_offsets += total;
                self.counters
                    .gaps
                    .extend(runs.into_iter().map(|(from, to)| OffsetGap {
                        topic: self.split.topic.clone(),
                        partition: self.split.partition,
                        expected: from,
                        resumed_at: to,
                        reason: format!(
                            "the broker delivered no record for these offsets of the range [{}, {}) (data loss)",
                            self.split.start, self.split.end
                        ),
                    }));
                Ok(())
            }
            _ => Err(ConnectorError::OffsetsLost {
                topic: self.split.topic.clone(),
                partition: self.split.partition,
                message: format!(
                    "{total} offset(s) of the epoch's range [{}, {}) were never delivered by the broker: {} — data loss, nothing of this epoch was committed (the topic is not compacted; set on_offsets_lost = 'skip' to continue and record the lost offsets in the checkpoint's gaps/N, or transactional = 'true' if transactional producers write the topic)",
                    self.split.start,
                    self.split.end,
                    describe_runs(&runs)
                ),
            }),
        }
    }

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
        while self.next < self.split.end && self.records.len() < BATCH_RECORDS {
            let consumer = self.consumer.as_ref().expect("open while reading");
            match consumer.get().poll(Duration::from_millis(100)) {
                Some(Ok(msg)) => {
                    let offset = msg.offset();
                    if offset < self.next {
                        continue;
                    }
                    if offset >= self.split.end {
                        note_missing(&mut self.missing, self.next, self.split.end);
                        self.next = self.split.end;
                        break;
                    }
                    note_missing(&mut self.missing, self.next, offset);
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
                            note_missing(&mut self.missing, self.next, self.split.end);
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
        let spans = records.iter().map(|&i| self.records[i].value);
        decode_json_spans(&self.schema, &self.values, spans)
    }
}

/// Decodes Kafka record values, each one JSON object, into one batch of `schema`; the error
/// says why not (what a bad record's report names). What a Kafka source does with every
/// value it reads.
pub fn decode_json_values(
    schema: &SchemaRef,
    values: &[&[u8]],
) -> std::result::Result<RecordBatch, String> {
    let mut buffer = Vec::new();
    let mut spans = Vec::with_capacity(values.len());
    for value in values {
        spans.push(Some((buffer.len(), value.len())));
        buffer.extend_from_slice(value);
        buffer.push(b'\n');
    }
    decode_json_spans(schema, &buffer, spans.into_iter())
}

/// Decodes the values at `spans` of `buffer` (start, length; each followed by a newline).
fn decode_json_spans(
    schema: &SchemaRef,
    buffer: &[u8],
    spans: impl ExactSizeIterator<Item = Option<(usize, usize)>>,
) -> std::result::Result<RecordBatch, String> {
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(spans.len().max(1))
        .build_decoder()
        .map_err(|e| e.to_string())?;
    for (n, span) in spans.enumerate() {
        let bytes = span
            .and_then(|(start, len)| buffer.get(start..start.checked_add(len)?.checked_add(1)?))
            .ok_or("the record has no value")?;
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
        None => Ok(RecordBatch::new_empty(schema.clone())),
    }
}

impl SplitReader for KafkaReader {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if self.next >= self.split.end {
                if self.consumer.is_some() {
                    self.account_for_missing()?;
                }
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
        self.counters.clone()
    }
}

/// Notes in `missing` that no record answered offsets `[from, to)`.
fn note_missing(missing: &mut Vec<(i64, i64)>, from: i64, to: i64) {
    if from >= to {
        return;
    }
    match missing.last_mut() {
        Some(last) if last.1 == from => last.1 = to,
        _ => missing.push((from, to)),
    }
}

/// Runs of offsets for an error message: `5000, 5120..=5122` (the first 20 runs, then a count).
fn describe_runs(runs: &[(i64, i64)]) -> String {
    const SHOWN: usize = 20;
    let mut out: Vec<String> = runs
        .iter()
        .take(SHOWN)
        .map(|&(from, to)| {
            if to - from == 1 {
                from.to_string()
            } else {
                format!("{from}..={}", to - 1)
            }
        })
        .collect();
    if runs.len() > SHOWN {
        out.push(format!("and {} more runs", runs.len() - SHOWN));
    }
    format!("offsets {}", out.join(", "))
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
pub(super) struct DeadLetters {
    dir: sluice_checkpoint::Location,
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
    pub(super) fn new(
        dir: sluice_checkpoint::Location,
        ctx: &ReadContext,
        split: &KafkaSplit,
    ) -> Self {
        let query = ctx.query_id.short();
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
        let dir = match &self.dir {
            sluice_checkpoint::Location::Local(dir) => dir,
            sluice_checkpoint::Location::Object(root) => {
                // One PUT of the whole file: atomic, and a replay replaces it.
                let url = root.url_of(&self.name);
                let parquet_err = |source| ConnectorError::Parquet {
                    path: url.clone().into(),
                    source,
                };
                let mut writer = ArrowWriter::try_new(Vec::new(), dead_letter_schema(), None)
                    .map_err(parquet_err)?;
                writer.write(&batch).map_err(parquet_err)?;
                let bytes = writer.into_inner().map_err(parquet_err)?;
                root.put(&self.name, bytes, object_store::PutMode::Overwrite)?;
                return Ok(());
            }
        };
        std::fs::create_dir_all(dir).map_err(|e| ConnectorError::io("create", dir, e))?;
        let path = dir.join(&self.name);
        let tmp = dir.join(format!(".{}.tmp", self.name));
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
    use super::{describe_runs, note_missing};

    #[test]
    fn missing_offsets_merge_into_runs_and_empty_runs_are_ignored() {
        let mut missing = Vec::new();
        note_missing(&mut missing, 5, 5);
        note_missing(&mut missing, 5, 7);
        note_missing(&mut missing, 7, 8);
        note_missing(&mut missing, 10, 11);
        assert_eq!(missing, vec![(5, 8), (10, 11)]);
    }

    #[test]
    fn runs_name_single_offsets_and_inclusive_ranges() {
        assert_eq!(describe_runs(&[(5, 6), (9, 12)]), "offsets 5, 9..=11");
        let many: Vec<(i64, i64)> = (0..25).map(|i| (i * 10, i * 10 + 1)).collect();
        let text = describe_runs(&many);
        assert!(text.ends_with("190, and 5 more runs"), "{text}");
    }
}
