//! The bodies of Sluice's fuzz targets, one function per decoder of untrusted bytes — what an
//! executor receives from the driver and its peers, what a checkpoint or a broker holds, what
//! a user writes. Each must return an error for bad input, never panic. The `fuzz_targets/`
//! binaries call them under libFuzzer; the unit tests below run them on seed inputs in every
//! `cargo test`, so a target that stopped compiling or started panicking on its seeds fails CI.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Control frames as both ends decode them, fed in chunks of the first byte's size.
pub fn frame_decoder(data: &[u8]) {
    use sluice_engine::protocol::{FetchRequest, ToDriver, ToExecutor};
    fn drain<T: serde::de::DeserializeOwned>(data: &[u8], chunk: usize) {
        let mut codec = sluice_net::MessageCodec::<T>::new(64 * 1024);
        let mut buf = BytesMut::new();
        for piece in data.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    }
    let chunk = data.first().copied().unwrap_or(1) as usize;
    drain::<ToDriver>(data, chunk);
    drain::<ToExecutor>(data, chunk);
    drain::<FetchRequest>(data, chunk);
}

/// A stage plan as an executor decodes it (datafusion-proto with Sluice's codec).
pub fn stage_plan(data: &[u8]) {
    static SESSION: OnceLock<datafusion::execution::session_state::SessionState> = OnceLock::new();
    let session = SESSION.get_or_init(sluice_engine::executor::stage_session);
    let _ = sluice_engine::executor::decode_stage_plan(session, data);
}

/// A shuffle stream (Arrow IPC) as a downstream task reads it from a peer.
pub fn shuffle_stream(data: &[u8]) {
    futures::executor::block_on(async {
        let mut reader = sluice_net::ipc::IpcStreamReader::new(data, BytesMut::new());
        while let Ok(Some(_)) = reader.next_batch().await {}
    });
}

/// A state changelog as a restoring task replays it.
pub fn state_changelog(data: &[u8]) {
    let _ = sluice_checkpoint::state::parse_changelog(data);
}

/// The JSON records of a checkpoint, as a restarting driver or `checkpoint inspect` reads them.
pub fn checkpoint_records(data: &[u8]) {
    let _ = serde_json::from_slice::<sluice_checkpoint::QueryMetadata>(data);
    let _ = serde_json::from_slice::<sluice_checkpoint::CommitRecord>(data);
    let _ = serde_json::from_slice::<sluice_checkpoint::state::SnapshotManifest>(data);
    let _ = serde_json::from_slice::<sluice_engine::driver::EpochInput>(data);
    let _ = serde_json::from_slice::<sluice_connectors::parquet_sink::SinkCommitRecord>(data);
    let _ = serde_json::from_slice::<Vec<sluice_connectors::OffsetGap>>(data);
}

/// The schema Kafka JSON values are decoded into by [`kafka_json`].
pub fn kafka_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new(
            "date_time",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
    ]))
}

/// Kafka record values (split at 0xFF bytes) decoded as a JSON-format source does.
pub fn kafka_json(data: &[u8]) {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    let schema = SCHEMA.get_or_init(kafka_schema);
    let values: Vec<&[u8]> = data.split(|&b| b == 0xFF).collect();
    let _ = sluice_connectors::kafka::decode_json_values(schema, &values);
}

/// A file's path below a hive-partitioned table, as a file source reads partition values.
pub fn hive_path(data: &[u8]) {
    if let Ok(relative) = std::str::from_utf8(data) {
        let file = Path::new("/table").join(relative);
        let _ = sluice_connectors::file::partition_values("/table", &file);
    }
}

/// A job's SQL text: parsing, watermark extraction and the window-function rewriting.
pub fn streaming_sql(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sluice_engine::job::Job::parse(sluice_engine::job::JobText {
            origin: "fuzz".into(),
            text: text.into(),
        });
    }
}

#[cfg(test)]
mod tests;
