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

mod background;
pub mod ranges;
mod reader;
pub mod sink;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{ConnectorError, Result};
use crate::options::{BadRecordPolicy, KafkaFormat, KafkaSourceSpec, StartPosition};
use crate::{KafkaEndpoint, PlanRequest, ReadContext, Source, SourceEpoch, Split, SplitReader};
use background::Background;
pub use background::{PARTITION_DISCOVERY_INTERVAL, PREFETCH_MAX_AGE};
pub use ranges::{plan_ranges, PartitionState, RangeInputs};
pub use reader::decode_json_values;
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
    admin: Mutex<Option<Arc<BaseConsumer>>>,
    /// Partition discovery and offset prefetching, started by the first watermark request.
    background: Mutex<Option<Arc<Background>>>,
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        if let Some(b) = self
            .background
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            b.stop();
        }
    }
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
            background: Mutex::new(None),
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

    fn admin(&self) -> Result<Arc<BaseConsumer>> {
        let mut guard = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(Arc::new(
                client_config(&self.spec)
                    .create::<BaseConsumer>()
                    .map_err(|e| self.error(format!("cannot create a client: {e}")))?,
            ));
        }
        Ok(guard.as_ref().expect("created above").clone())
    }

    /// The topic's partitions: asked for directly the first time, which also starts the
    /// background thread; from then on, as of its newest refresh.
    fn partitions(&self, consumer: &Arc<BaseConsumer>) -> Result<Vec<i32>> {
        let mut guard = self.background.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = guard.as_ref() {
            return b.partitions().map_err(|m| self.error(m));
        }
        let partitions = topic_partitions(consumer, &self.spec).map_err(|m| self.error(m))?;
        let background = Background::start(consumer.clone(), self.spec.clone(), partitions.clone())
            .map_err(|e| self.error(format!("cannot start partition discovery: {e}")))?;
        *guard = Some(background);
        Ok(partitions)
    }

    /// The background thread, once started.
    fn background(&self) -> Option<Arc<Background>> {
        self.background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The latest offsets of `partitions`: fetched ahead of time if that was asked for
    /// recently ([`Source::prepare_next_epoch`]) and covers them all, else asked for now.
    fn latest_offsets(
        &self,
        consumer: &BaseConsumer,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>> {
        if let Some(found) = self.background().and_then(|b| b.take_latest()) {
            if partitions.iter().all(|p| found.contains_key(p)) {
                return Ok(found);
            }
        }
        list_offsets(consumer, &self.spec, partitions, Offset::End)
    }

    /// Every partition of the topic with its high watermark and, where an epoch after
    /// `previous` has something to read (or `previous` is `None`), its low watermark — one
    /// ListOffsets request each. Elsewhere `low` is the high watermark: with nothing to read,
    /// nothing can have been lost.
    pub fn watermarks(&self, previous: Option<&BTreeMap<i32, i64>>) -> Result<Vec<PartitionState>> {
        let consumer = self.admin()?;
        let partitions = self.partitions(&consumer)?;
        let high = self.latest_offsets(&consumer, &partitions)?;
        let reading: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| previous.is_none_or(|prev| prev.get(p) != high.get(p)))
            .collect();
        let low = list_offsets(&consumer, &self.spec, &reading, Offset::Beginning)?;
        Ok(partitions
            .into_iter()
            .map(|p| {
                let high = high.get(&p).copied().unwrap_or(0);
                PartitionState {
                    partition: p,
                    low: low.get(&p).copied().unwrap_or(high),
                    high,
                }
            })
            .collect())
    }

    /// Every partition's high watermark.
    pub fn high_watermarks(&self) -> Result<BTreeMap<i32, i64>> {
        let consumer = self.admin()?;
        let partitions = self.partitions(&consumer)?;
        list_offsets(&consumer, &self.spec, &partitions, Offset::End)
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
                let found = self
                    .admin()?
                    .offsets_for_times(tpl, METADATA_TIMEOUT)
                    .map_err(|e| self.error(format!("looking up offsets for time {ts}: {e}")))?;
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
        let partitions = self.watermarks(request.previous.map(|p| &p.position))?;
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

    fn prepare_next_epoch(&self) {
        if let Some(b) = self.background() {
            b.request_latest();
        }
    }

    fn available_end(&self) -> Result<Option<BTreeMap<i32, i64>>> {
        Ok(Some(self.high_watermarks()?))
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
                let dir = sluice_checkpoint::Location::parse_with(dir, &self.spec.storage)?;
                Some(DeadLetters::new(dir, ctx, split))
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

/// The partitions of `spec`'s topic, from a metadata request; the error says what is wrong.
fn topic_partitions(
    consumer: &BaseConsumer,
    spec: &KafkaSourceSpec,
) -> std::result::Result<Vec<i32>, String> {
    let metadata = consumer
        .fetch_metadata(Some(&spec.topic), METADATA_TIMEOUT)
        .map_err(|e| format!("cannot fetch metadata: {e}"))?;
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == spec.topic)
        .ok_or("the broker returned no metadata for the topic")?;
    if let Some(e) = topic.error() {
        let e = rdkafka::error::RDKafkaErrorCode::from(e);
        return Err(
            if e == rdkafka::error::RDKafkaErrorCode::UnknownTopicOrPartition {
                "the topic does not exist (create it first)".into()
            } else {
                format!("metadata error: {e}")
            },
        );
    }
    if topic.partitions().is_empty() {
        return Err("the topic does not exist (create it first)".into());
    }
    let mut partitions: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    partitions.sort_unstable();
    Ok(partitions)
}

/// The earliest (`Offset::Beginning`) or latest (`Offset::End`) offset of each of `partitions`,
/// with one ListOffsets request.
fn list_offsets(
    consumer: &BaseConsumer,
    spec: &KafkaSourceSpec,
    partitions: &[i32],
    which: Offset,
) -> Result<BTreeMap<i32, i64>> {
    let error = |message: String| ConnectorError::Kafka {
        bootstrap_servers: spec.bootstrap_servers.clone(),
        topic: spec.topic.clone(),
        message,
    };
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let what = if which == Offset::End {
        "latest"
    } else {
        "earliest"
    };
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        // librdkafka takes the ListOffsets timestamp in the offset field: -1 latest, -2 earliest.
        tpl.add_partition_offset(&spec.topic, *p, which)
            .map_err(|e| error(e.to_string()))?;
    }
    let found = consumer
        .offsets_for_times(tpl, METADATA_TIMEOUT)
        .map_err(|e| error(format!("cannot fetch the {what} offsets: {e}")))?;
    let mut out = BTreeMap::new();
    for elem in found.elements() {
        if let Err(e) = elem.error() {
            return Err(error(format!(
                "cannot fetch the {what} offset of partition {}: {e}",
                elem.partition()
            )));
        }
        match elem.offset() {
            Offset::Offset(o) => {
                out.insert(elem.partition(), o);
            }
            other => {
                return Err(error(format!(
                    "the broker gave no {what} offset for partition {} ({other:?})",
                    elem.partition()
                )))
            }
        }
    }
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
        storage: Vec::new(),
        on_offsets_lost: BadRecordPolicy::Fail,
        group_id: None,
        properties: BTreeMap::new(),
        read_timeout_ms: 5_000,
        transactional: false,
    };
    KafkaSource::new(spec, raw_schema()).high_watermarks()
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

/// Whether `topic` is compacted (its `cleanup.policy` includes `compact`), asked of the broker
/// with DescribeConfigs. Only called when a range held offsets without records, so the
/// request costs nothing on the common path.
fn topic_is_compacted(spec: &KafkaSourceSpec, topic: &str) -> Result<bool> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let error = |message: String| ConnectorError::Kafka {
        bootstrap_servers: spec.bootstrap_servers.clone(),
        topic: topic.to_string(),
        message,
    };
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &spec.bootstrap_servers);
    for (k, v) in &spec.properties {
        config.set(k, v);
    }
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = config
        .create()
        .map_err(|e| error(format!("cannot create an admin client: {e}")))?;
    let options = AdminOptions::new().request_timeout(Some(METADATA_TIMEOUT));
    let resource = ResourceSpecifier::Topic(topic);
    let results = futures::executor::block_on(admin.describe_configs([&resource], &options))
        .map_err(|e| error(format!("cannot describe the topic's configuration: {e}")))?;
    let policy = results
        .into_iter()
        .next()
        .ok_or_else(|| error("the broker described no configuration for the topic".into()))?
        .map_err(|e| error(format!("cannot describe the topic's configuration: {e}")))?
        .get("cleanup.policy")
        .and_then(|entry| entry.value.clone())
        .unwrap_or_default();
    Ok(policy
        .split(',')
        .any(|p| p.trim().eq_ignore_ascii_case("compact")))
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
