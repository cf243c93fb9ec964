//! The Kafka sink: each output row becomes one JSON record.
//!
//! The value is the row as a JSON object (arrow-json's encoding: timestamps as ISO-8601 text,
//! nulls left out); the key, when the table names `key` columns (or the query is a keyed
//! aggregation whose group columns reach the sink), is a JSON object of those columns, so a
//! compacted topic or an upsert consumer keeps each key's latest row. Records are hashed to
//! partitions by key (librdkafka's default partitioner); without a key they are spread.
//!
//! Delivery is **at-least-once**: a task's writer sends while it runs and waits in `finish`
//! until the broker acknowledged every record (idempotent producer: no duplicates from
//! retries), so the epoch commits only after its output is durable in Kafka. An epoch that is
//! run again after a crash sends its rows again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::json::LineDelimitedWriter;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use sluice_checkpoint::{CheckpointStore, Epoch};

use crate::error::{ConnectorError, Result};
use crate::options::KafkaSinkSpec;
use crate::{CommitSummary, Committer, Recorded, Sink, SinkWriter, WriterContext, WriterReceipt};

/// How long `finish` waits for the broker to acknowledge a task's records.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);

/// A Kafka topic being written.
#[derive(Debug, Clone)]
pub struct KafkaSink {
    spec: KafkaSinkSpec,
    schema: SchemaRef,
    /// Indices of the key columns in `schema`.
    key: Vec<usize>,
}

impl KafkaSink {
    /// A sink for rows of `schema`, keyed by the spec's key columns (none: no key).
    pub fn new(spec: KafkaSinkSpec, schema: SchemaRef) -> Result<Self> {
        let mut indices = Vec::new();
        for name in spec.key.iter().flatten() {
            let idx = schema
                .index_of(name)
                .map_err(|_| ConnectorError::InvalidOptions {
                    table: spec.table.clone(),
                    message: format!(
                        "key column '{name}' is not a column of the query's output ({})",
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
            indices.push(idx);
        }
        Ok(Self {
            spec,
            schema,
            key: indices,
        })
    }

    /// The key columns' names.
    pub fn key_columns(&self) -> Vec<String> {
        self.key
            .iter()
            .map(|&i| self.schema.field(i).name().clone())
            .collect()
    }

    fn error(&self, message: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Kafka {
            bootstrap_servers: self.spec.bootstrap_servers.clone(),
            topic: self.spec.topic.clone(),
            message: message.to_string(),
        }
    }
}

impl Sink for KafkaSink {
    fn open_writer(&self, ctx: &WriterContext) -> Result<Box<dyn SinkWriter>> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.spec.bootstrap_servers)
            .set(
                "client.id",
                format!("sluice-{}-t{}", ctx.query_id, ctx.task),
            )
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", FLUSH_TIMEOUT.as_millis().to_string());
        for (k, v) in &self.spec.properties {
            config.set(k, v);
        }
        let producer = config
            .create_with_context(Deliveries::default())
            .map_err(|e| self.error(format!("cannot create a producer: {e}")))?;
        Ok(Box::new(KafkaWriter {
            sink: self.clone(),
            producer,
            records: 0,
            bytes: 0,
        }))
    }
}

/// Counts records the broker refused.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(|| e.to_string());
        }
    }
}

struct KafkaWriter {
    sink: KafkaSink,
    producer: BaseProducer<Deliveries>,
    records: u64,
    bytes: u64,
}

/// Each row of `batch` as one JSON object (no trailing newline).
fn json_rows(batch: &RecordBatch) -> std::result::Result<Vec<Vec<u8>>, String> {
    let mut buf = Vec::new();
    {
        let mut writer = LineDelimitedWriter::new(&mut buf);
        writer.write(batch).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    let rows: Vec<Vec<u8>> = buf
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if rows.len() != batch.num_rows() {
        return Err(format!(
            "encoded {} JSON rows for {} rows",
            rows.len(),
            batch.num_rows()
        ));
    }
    Ok(rows)
}

impl SinkWriter for KafkaWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let values =
            json_rows(batch).map_err(|e| self.sink.error(format!("encoding rows: {e}")))?;
        let keys = if self.sink.key.is_empty() {
            None
        } else {
            let projected = batch
                .project(&self.sink.key)
                .map_err(|e| self.sink.error(format!("projecting the key: {e}")))?;
            Some(
                json_rows(&projected)
                    .map_err(|e| self.sink.error(format!("encoding keys: {e}")))?,
            )
        };
        let topic = self.sink.spec.topic.as_str();
        for (i, value) in values.iter().enumerate() {
            let key = keys.as_ref().map(|k| k[i].as_slice());
            let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(value.as_slice());
            if let Some(key) = key {
                record = record.key(key);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(self.sink.error(format!("sending a record: {e}"))),
                }
            }
            self.records += 1;
            self.bytes += value.len() as u64 + key.map_or(0, |k| k.len() as u64);
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<WriterReceipt> {
        self.producer.flush(FLUSH_TIMEOUT).map_err(|e| {
            self.sink.error(format!(
                "the broker did not acknowledge {} records within {}s: {e}",
                self.producer.in_flight_count(),
                FLUSH_TIMEOUT.as_secs()
            ))
        })?;
        let context = self.producer.context();
        let failed = context.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = context
                .first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            return Err(self.sink.error(format!(
                "{failed} of {} records were refused by the broker (first: {first})",
                self.records
            )));
        }
        Ok(WriterReceipt {
            files: Vec::new(),
            records: self.records,
            bytes: self.bytes,
        })
    }
}

/// The driver side of the Kafka sink: records were delivered by the tasks; the epoch's commit
/// only sums them up. Nothing is staged, so there is nothing to publish, recover or abort.
#[derive(Debug, Clone, Default)]
pub struct KafkaCommitter;

impl Committer for KafkaCommitter {
    fn commit(
        &self,
        _store: &CheckpointStore,
        _epoch: Epoch,
        receipts: Vec<WriterReceipt>,
    ) -> Result<CommitSummary> {
        Ok(CommitSummary {
            files: 0,
            rows: receipts.iter().map(|r| r.records).sum(),
            bytes: receipts.iter().map(|r| r.bytes).sum(),
        })
    }

    fn record(
        &self,
        store: &CheckpointStore,
        epoch: Epoch,
        receipts: Vec<WriterReceipt>,
    ) -> Result<Recorded> {
        Ok(Recorded::Done(self.commit(store, epoch, receipts)?))
    }

    fn publish_recorded(&self, _store: &CheckpointStore, _epoch: Epoch) -> Result<bool> {
        // Nothing is recorded: the epoch runs again and sends its rows again (at-least-once).
        Ok(false)
    }

    fn finish_recorded(&self, _store: &CheckpointStore, epoch: Epoch) -> Result<CommitSummary> {
        Err(ConnectorError::Internal(format!(
            "the Kafka sink records no publication to finish (epoch {epoch})"
        )))
    }

    fn abort(&self, _query_id: &sluice_checkpoint::QueryId, _epoch: Epoch) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    #[test]
    fn rows_encode_as_json_objects() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("auction", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a\nb"), None])),
                Arc::new(TimestampMillisecondArray::from(vec![0, 1_500])),
            ],
        )
        .unwrap();
        let rows = json_rows(&batch).unwrap();
        assert_eq!(
            String::from_utf8(rows[0].clone()).unwrap(),
            r#"{"auction":1,"name":"a\nb","t":"1970-01-01T00:00:00"}"#
        );
        assert_eq!(
            String::from_utf8(rows[1].clone()).unwrap(),
            r#"{"auction":2,"t":"1970-01-01T00:00:01.500"}"#
        );
    }
}
