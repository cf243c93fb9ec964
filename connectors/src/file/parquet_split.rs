//! Reading one Parquet split (selected row groups of a file), locally or from an object store.

use std::fs::File;
use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::{align, bad_record, object, FileSplit, SplitReader, BATCH_ROWS};
use crate::error::{ConnectorError, Result};

/// Reads selected row groups of one Parquet file, aligning its columns to the table schema by
/// name (casting where the file's types differ).
pub(super) struct ParquetSplitReader {
    path: PathBuf,
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    target: SchemaRef,
}

/// A Parquet input that may fetch a split's column chunks ahead of its page reader.
pub(super) trait Prefetch {
    fn prefetch(&mut self, _ranges: &[std::ops::Range<u64>]) -> Result<()> {
        Ok(())
    }
}

/// A local file is read where it lies.
impl Prefetch for File {}

/// An object fetches the split's projected column chunks at once instead of page by page.
impl Prefetch for object::ObjectFile {
    fn prefetch(&mut self, ranges: &[std::ops::Range<u64>]) -> Result<()> {
        object::ObjectFile::prefetch(self, ranges)
    }
}

impl ParquetSplitReader {
    pub(super) fn open<T: parquet::file::reader::ChunkReader + Prefetch + 'static>(
        path: PathBuf,
        mut file: T,
        split: &FileSplit,
        target: SchemaRef,
    ) -> Result<Self> {
        let parquet_err = |source| ConnectorError::Parquet {
            path: path.clone(),
            source,
        };
        let metadata =
            parquet::arrow::arrow_reader::ArrowReaderMetadata::load(&file, Default::default())
                .map_err(parquet_err)?;
        let file_schema = metadata.schema().clone();
        let mut indices = Vec::with_capacity(target.fields().len());
        for field in target.fields() {
            let idx =
                file_schema
                    .index_of(field.name())
                    .map_err(|_| ConnectorError::SchemaMismatch {
                        path: path.clone(),
                        message: format!("file has no column '{}'", field.name()),
                    })?;
            indices.push(idx);
        }
        let mask = ProjectionMask::roots(metadata.parquet_schema(), indices);
        let row_groups = metadata.metadata().row_groups();
        let chunks: Vec<std::ops::Range<u64>> = match &split.row_groups {
            Some(selected) => selected.iter().filter_map(|&i| row_groups.get(i)).collect(),
            None => row_groups.iter().collect::<Vec<_>>(),
        }
        .into_iter()
        .flat_map(|rg| rg.columns().iter().enumerate())
        .filter(|(leaf, _)| mask.leaf_included(*leaf))
        .map(|(_, column)| {
            let (start, len) = column.byte_range();
            start..start.saturating_add(len)
        })
        .collect();
        file.prefetch(&chunks)?;
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata);
        let mut builder = builder.with_projection(mask).with_batch_size(BATCH_ROWS);
        if let Some(rgs) = &split.row_groups {
            builder = builder.with_row_groups(rgs.clone());
        }
        let reader = builder.build().map_err(parquet_err)?;
        Ok(Self {
            path,
            reader,
            target,
        })
    }
}

impl SplitReader for ParquetSplitReader {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        match self.reader.next() {
            None => Ok(None),
            Some(Err(e)) => Err(bad_record(&self.path, &e.to_string())),
            Some(Ok(batch)) => align(&self.path, batch, &self.target).map(Some),
        }
    }
}
