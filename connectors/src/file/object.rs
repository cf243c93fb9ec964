//! File sources on an object store (`path = 's3://bucket/prefix/'`): listing by prefix, and
//! reading an object by range requests so memory stays bounded as with local files — a Parquet
//! split fetches its footer, then its row group's projected column chunks at once (one
//! coalesced request for adjacent chunks, up to [`PREFETCH_LIMIT`] bytes; pages beyond are read
//! as they come), a CSV or JSON reader streams the object in ranges of [`FIRST_READ`] growing to
//! [`READ_CHUNK`].

use std::io::Read;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use parquet::file::reader::{ChunkReader, Length};
use sluice_checkpoint::location::block_on;
use sluice_checkpoint::{Location, ObjectRoot};

use crate::error::{ConnectorError, Result};
use crate::options::FileFormat;

/// Bytes a reader fetches first: small, as Parquet's page reader opens a reader at each page
/// header and reads only what the page needs.
const FIRST_READ: u64 = 64 << 10;
/// The most a reader fetches per request: each fetch doubles the last, up to this.
const READ_CHUNK: u64 = 8 << 20;
/// The most a Parquet split fetches ahead (its row group's projected column chunks).
pub const PREFETCH_LIMIT: u64 = 64 << 20;

/// One object, read by ranges.
#[derive(Debug, Clone)]
pub struct ObjectFile {
    root: ObjectRoot,
    len: u64,
    /// Ranges fetched ahead: (start, bytes), sorted by start.
    fetched: std::sync::Arc<Vec<(u64, Bytes)>>,
}

impl ObjectFile {
    /// Opens the object at `url` (its size is looked up), with a table's object-store options.
    pub fn open(url: &str, storage: &[(String, String)]) -> Result<Self> {
        let Location::Object(root) = Location::parse_with(url, storage)? else {
            return Err(ConnectorError::Internal(format!(
                "{url} is not an object-store URL"
            )));
        };
        let store = root.store().clone();
        let path = root.path("");
        let meta = block_on(async move { store.head(&path).await })
            .map_err(|e| sluice_checkpoint::StoreError::new("open", url, e))?;
        Ok(Self {
            root,
            len: meta.size,
            fetched: Default::default(),
        })
    }

    /// Fetches `ranges` ahead, in as few requests as their gaps allow (object_store coalesces
    /// ranges less than 1 MiB apart), up to [`PREFETCH_LIMIT`] bytes in all; reads inside them
    /// are then served from memory.
    pub fn prefetch(&mut self, ranges: &[std::ops::Range<u64>]) -> Result<()> {
        let mut budget = PREFETCH_LIMIT;
        let mut wanted: Vec<std::ops::Range<u64>> = Vec::new();
        for r in ranges {
            let r = r.start.min(self.len)..r.end.min(self.len);
            if r.is_empty() || r.end - r.start > budget {
                continue;
            }
            budget -= r.end - r.start;
            wanted.push(r);
        }
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort_by_key(|r| r.start);
        let store = self.root.store().clone();
        let path = self.root.path("");
        let asked = wanted.clone();
        let got = block_on(async move { store.get_ranges(&path, &asked).await })
            .map_err(|e| sluice_checkpoint::StoreError::new("read", self.root.url(), e))?;
        self.fetched =
            std::sync::Arc::new(wanted.iter().map(|r| r.start).zip(got).collect::<Vec<_>>());
        Ok(())
    }

    /// The fetched bytes from `start` to the end of the fetched range holding it.
    fn fetched_from(&self, start: u64) -> Option<Bytes> {
        let i = self.fetched.partition_point(|(s, _)| *s <= start);
        let (s, bytes) = self.fetched.get(i.checked_sub(1)?)?;
        let offset = (start - s) as usize;
        (offset < bytes.len()).then(|| bytes.slice(offset..))
    }

    /// The object's size.
    pub fn size(&self) -> u64 {
        self.len
    }

    fn range(
        &self,
        start: u64,
        end: u64,
    ) -> std::result::Result<Bytes, sluice_checkpoint::StoreError> {
        let store = self.root.store().clone();
        let path = self.root.path("");
        block_on(async move { store.get_range(&path, start..end).await })
            .map_err(|e| sluice_checkpoint::StoreError::new("read", self.root.url(), e))
    }

    /// A reader of the whole object, from the start.
    pub fn reader(&self) -> ObjectRead {
        ObjectRead {
            file: self.clone(),
            pos: 0,
            buf: Bytes::new(),
            next: FIRST_READ,
        }
    }
}

impl Length for ObjectFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for ObjectFile {
    type T = ObjectRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<ObjectRead> {
        let buf = self.fetched_from(start).unwrap_or_default();
        Ok(ObjectRead {
            file: self.clone(),
            pos: start + buf.len() as u64,
            buf,
            next: FIRST_READ,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        if let Some(bytes) = self.fetched_from(start) {
            if bytes.len() >= length {
                return Ok(bytes.slice(..length));
            }
        }
        let end = start.saturating_add(length as u64).min(self.len);
        self.range(start, end)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    }
}

/// Reads an object from a position on, [`FIRST_READ`] bytes in the first request and twice as
/// many in each next one, up to [`READ_CHUNK`].
pub struct ObjectRead {
    file: ObjectFile,
    pos: u64,
    buf: Bytes,
    /// Bytes the next request fetches.
    next: u64,
}

impl Read for ObjectRead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            if self.pos >= self.file.len {
                return Ok(0);
            }
            let end = (self.pos + self.next).min(self.file.len);
            self.next = (self.next * 2).min(READ_CHUNK);
            self.buf = self
                .file
                .range(self.pos, end)
                .map_err(std::io::Error::other)?;
            self.pos = end;
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

/// The objects of `format` below `root` (skipping hidden and `_`-prefixed names at any level,
/// as for directories), as URLs, sorted; `root` itself when it names one object.
pub fn list(root: &ObjectRoot, format: FileFormat) -> Result<Vec<String>> {
    let mut files: Vec<String> = root
        .list("")?
        .into_iter()
        .filter(|(rel, _)| {
            rel.split('/')
                .all(|part| !part.starts_with('.') && !part.starts_with('_'))
        })
        .filter(|(rel, _)| FileFormat::from_path(rel) == Some(format))
        .map(|(rel, _)| root.url_of(&rel))
        .collect();
    if files.is_empty() && root.exists("")? {
        files.push(root.url().to_string());
    }
    files.sort();
    Ok(files)
}

/// The format of the first visible object below `url` with a known extension (`None`: there
/// is none); an error says why the prefix could not be listed.
pub fn detect(url: &str) -> Result<Option<FileFormat>> {
    let Location::Object(root) = Location::parse(url)? else {
        return Ok(None);
    };
    let mut listed = root.list("")?;
    listed.sort();
    Ok(listed.iter().find_map(|(rel, _)| {
        rel.split('/')
            .all(|part| !part.starts_with('.') && !part.starts_with('_'))
            .then(|| FileFormat::from_path(rel))
            .flatten()
    }))
}
