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
//!
//! - [`ranges`]: the driver's pure decision of an epoch's offset ranges.
//! - `reader`: the executor side: reading a range, decoding, dead letters.
//! - [`sink`]: the Kafka sink (JSON records, at-least-once).

pub mod ranges;
mod reader;
pub mod sink;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{ConnectorError, Result};
use crate::options::{BadRecordPolicy, KafkaFormat, KafkaSourceSpec, StartPosition};
use crate::{KafkaEndpoint, PlanRequest, ReadContext, Source, SourceEpoch, Split, SplitReader};
pub use ranges::{plan_ranges, PartitionState, RangeInputs};
use reader::{DeadLetters, Decoding, KafkaReader, SplitConsumer};

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
        Ok(Box::new(KafkaReader::new(
            self.spec.clone(),
            consumer,
            split.clone(),
            decoding,
            target,
            dead_letters,
        )))
    }
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
        key: None,
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
