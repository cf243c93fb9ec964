//! Arrow IPC record-batch streams over byte streams (QUIC streams in production).
//!
//! The writer emits the standard Arrow IPC *stream* format (schema message, record batches,
//! end-of-stream marker), so the same bytes can be stored in a file and served verbatim. The
//! reader is push-based ([`arrow::ipc::reader::StreamDecoder`]) so it never blocks a thread
//! waiting for the network.

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::Schema;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{NetError, Result};

const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Writes record batches as an Arrow IPC stream.
pub struct IpcStreamWriter<W> {
    io: W,
    encoder: StreamWriter<Vec<u8>>,
}

impl<W: AsyncWrite + Unpin> IpcStreamWriter<W> {
    /// Starts a stream of batches with `schema` (the schema message is sent with the first
    /// write).
    pub fn new(io: W, schema: &Schema) -> Result<Self> {
        Ok(Self {
            io,
            encoder: StreamWriter::try_new(Vec::new(), schema)?,
        })
    }

    /// Encodes and sends one batch.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.encoder.write(batch)?;
        self.flush_encoded().await
    }

    /// Sends the end-of-stream marker and returns the underlying stream.
    pub async fn finish(mut self) -> Result<W> {
        self.encoder.finish()?;
        self.flush_encoded().await?;
        self.io
            .flush()
            .await
            .map_err(|e| NetError::Stream(e.to_string()))?;
        Ok(self.io)
    }

    async fn flush_encoded(&mut self) -> Result<()> {
        let bytes = std::mem::take(self.encoder.get_mut());
        self.io
            .write_all(&bytes)
            .await
            .map_err(|e| NetError::Stream(e.to_string()))
    }
}

/// Reads record batches from an Arrow IPC stream.
pub struct IpcStreamReader<R> {
    io: R,
    decoder: StreamDecoder,
    pending: Buffer,
    done: bool,
}

impl<R: AsyncRead + Unpin> IpcStreamReader<R> {
    /// Reads from `io`; `already_read` holds bytes that were buffered before the IPC stream
    /// began (e.g. by a frame reader that read past its header).
    pub fn new(io: R, already_read: BytesMut) -> Self {
        Self {
            io,
            decoder: StreamDecoder::new(),
            pending: Buffer::from_vec(already_read.to_vec()),
            done: false,
        }
    }

    /// The next batch, or `None` at the end of the stream.
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            while !self.pending.is_empty() {
                // Arrow's decoder asserts instead of failing on some malformed buffers (a
                // bitmap shorter than its length, found by the `shuffle_stream` fuzz target):
                // bytes from a peer must be an error, never a panic of the task.
                let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.decoder.decode(&mut self.pending)
                }))
                .map_err(|_| NetError::MalformedFrame("malformed Arrow IPC stream".into()))?;
                if let Some(batch) = decoded? {
                    return Ok(Some(batch));
                }
            }
            if self.done {
                return Ok(None);
            }
            let mut chunk = vec![0u8; READ_CHUNK_BYTES];
            let n = self
                .io
                .read(&mut chunk)
                .await
                .map_err(|e| NetError::Stream(e.to_string()))?;
            if n == 0 {
                self.done = true;
                self.decoder.finish()?;
                return Ok(None);
            }
            chunk.truncate(n);
            self.pending = Buffer::from_vec(chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};
    use std::sync::Arc;

    #[tokio::test]
    async fn batches_round_trip_through_a_small_pipe() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..1000)),
                Arc::new(StringArray::from_iter(
                    (0..1000).map(|i| Some(format!("v{i}"))),
                )),
            ],
        )
        .unwrap();
        let (a, b) = tokio::io::duplex(1000);
        let expected = batch.clone();
        let writer = tokio::spawn(async move {
            let mut w = IpcStreamWriter::new(a, &schema).unwrap();
            w.write(&batch).await.unwrap();
            w.write(&batch).await.unwrap();
            w.finish().await.unwrap();
        });
        let mut r = IpcStreamReader::new(b, BytesMut::new());
        let mut got = vec![];
        while let Some(b) = r.next_batch().await.unwrap() {
            got.push(b);
        }
        writer.await.unwrap();
        assert_eq!(got, vec![expected.clone(), expected]);
    }

    #[tokio::test]
    async fn a_truncated_stream_is_an_error() {
        let (mut a, b) = tokio::io::duplex(1000);
        a.write_all(&[0xff, 0xff, 0xff, 0xff, 10, 0, 0, 0, 1, 2])
            .await
            .unwrap();
        drop(a);
        let mut r = IpcStreamReader::new(b, BytesMut::new());
        assert!(r.next_batch().await.is_err());
    }
}
