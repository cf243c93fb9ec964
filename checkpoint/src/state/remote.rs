//! Where a state partition's snapshots are stored: a directory of the checkpoint on a file
//! system every executor shares, or a prefix of an object store (`s3://…/state`).
//!
//! Both hold the same names (`sst/…`, `changelog/…`, `epoch-N/…`). They differ in how a
//! snapshot is published, as an object store has no rename: on a file system the epoch's small
//! files and manifest are staged in a directory renamed to `epoch-N`; on an object store the
//! small files go under `epoch-N/INCARNATION/` (one attempt never overwrites another's) and the
//! manifest `epoch-N/snapshot.json` is written last, in one PUT — a snapshot exists exactly
//! when its manifest does.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::{io, SnapshotManifest};
use crate::error::{CheckpointError, Result};
use crate::location::{Location, ObjectRoot, ObjectWriter};

/// One directory (or prefix) of the state store.
#[derive(Debug, Clone)]
pub(super) enum Remote {
    Local(PathBuf),
    Object(ObjectRoot),
}

pub(super) const MANIFEST: &str = "snapshot.json";

/// `epoch-N`.
pub(super) fn epoch_dir(epoch: u64) -> String {
    format!("epoch-{epoch}")
}

impl Remote {
    /// The store's root (`CHECKPOINT/state`).
    pub(super) fn of(store: &Location) -> Remote {
        match store {
            Location::Local(path) => Remote::Local(path.clone()),
            Location::Object(root) => Remote::Object(root.clone()),
        }
    }

    /// The directory `rel` below this one.
    pub(super) fn child(&self, rel: &str) -> Remote {
        match self {
            Remote::Local(path) => Remote::Local(path.join(rel)),
            Remote::Object(root) => Remote::Object(root.child(rel)),
        }
    }

    /// Whether this is an object store.
    pub(super) fn is_object(&self) -> bool {
        matches!(self, Remote::Object(_))
    }

    /// `rel`'s path or URL, for messages.
    pub(super) fn name(&self, rel: &str) -> PathBuf {
        match self {
            Remote::Local(path) => path.join(rel),
            Remote::Object(root) => PathBuf::from(root.url_of(rel)),
        }
    }

    /// The names directly below `rel` (files and directories); none if it does not exist.
    pub(super) fn names(&self, rel: &str) -> Result<Vec<String>> {
        match self {
            Remote::Local(path) => {
                let dir = path.join(rel);
                let entries = match fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(io("list state", &dir)(e)),
                };
                let mut names = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(io("list state", &dir))?;
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
                names.sort();
                Ok(names)
            }
            Remote::Object(root) => Ok(root.list_names(rel)?),
        }
    }

    /// The epochs with a published snapshot (a manifest) here.
    pub(super) fn snapshot_epochs(&self) -> Result<BTreeSet<u64>> {
        let epoch_of = |name: &str| name.strip_prefix("epoch-")?.parse::<u64>().ok();
        Ok(match self {
            // A directory `epoch-N` exists only once renamed from its staging directory.
            Remote::Local(_) => self.names("")?.iter().filter_map(|n| epoch_of(n)).collect(),
            // An `epoch-N/` prefix may hold an attempt's small files without a manifest.
            Remote::Object(root) => root
                .list("")?
                .into_iter()
                .filter_map(|(name, _)| epoch_of(name.strip_suffix(&format!("/{MANIFEST}"))?))
                .collect(),
        })
    }

    /// The bytes of `rel`, `None` if it does not exist.
    pub(super) fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Remote::Local(path) => {
                let file = path.join(rel);
                match fs::read(&file) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io("read state file", &file)(e)),
                }
            }
            Remote::Object(root) => Ok(root.get(rel)?.map(|(bytes, _)| bytes.to_vec())),
        }
    }

    /// Writes `bytes` as `rel` (a file system creates the directory; `durable` fsyncs).
    pub(super) fn write(&self, rel: &str, bytes: &[u8], durable: bool) -> Result<()> {
        match self {
            Remote::Local(path) => {
                let file = path.join(rel);
                if let Some(parent) = file.parent() {
                    fs::create_dir_all(parent).map_err(io("create state directory", parent))?;
                }
                fs::write(&file, bytes).map_err(io("write state file", &file))?;
                if durable {
                    sync(&file)?;
                    if let Some(parent) = file.parent() {
                        sync(parent)?;
                    }
                }
                Ok(())
            }
            Remote::Object(root) => {
                root.put(rel, bytes.to_vec(), object_store::PutMode::Overwrite)?;
                Ok(())
            }
        }
    }

    /// Stores the local file `from` as `rel` (hard-linked when the store is on the same file
    /// system; an object store receives it by multipart upload above the part size). Returns
    /// its size.
    pub(super) fn upload(&self, from: &Path, rel: &str, durable: bool) -> Result<u64> {
        match self {
            Remote::Local(path) => {
                let to = path.join(rel);
                if let Some(parent) = to.parent() {
                    fs::create_dir_all(parent).map_err(io("create state directory", parent))?;
                }
                let bytes = link_or_copy(from, &to)?;
                if durable {
                    sync(&to)?;
                }
                Ok(bytes)
            }
            Remote::Object(root) => {
                let mut file = fs::File::open(from).map_err(io("read state file", from))?;
                let mut writer = ObjectWriter::new(root, rel);
                std::io::copy(&mut file, &mut writer).map_err(|e| {
                    // The writer reports the store's error through io::Error.
                    match e.downcast::<crate::location::StoreError>() {
                        Ok(store) => CheckpointError::Store(store),
                        Err(e) => io("upload state file", from)(e),
                    }
                })?;
                Ok(writer.finish()?)
            }
        }
    }

    /// Copies `rel` to the local file `to`; `link` allows a hard link (a file RocksDB never
    /// modifies: an SST). Returns its size; a missing file is an error naming it.
    pub(super) fn download(&self, rel: &str, to: &Path, link: bool) -> Result<u64> {
        match self {
            Remote::Local(path) => {
                let from = path.join(rel);
                if link {
                    link_or_copy(&from, to)
                } else {
                    fs::copy(&from, to).map_err(io("restore state file", &from))
                }
            }
            Remote::Object(root) => match root.download(rel, to)? {
                Some(written) => written.map_err(io("write restored state file", to)),
                None => Err(CheckpointError::Corrupt {
                    path: self.name(rel),
                    message: "a state file the snapshot names is missing".into(),
                }),
            },
        }
    }

    /// Deletes the file `rel` (gone already is fine).
    pub(super) fn remove_file(&self, rel: &str) -> Result<()> {
        match self {
            Remote::Local(path) => {
                let file = path.join(rel);
                match fs::remove_file(&file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(io("remove state file", &file)(e))
                    }
                    _ => Ok(()),
                }
            }
            Remote::Object(root) => Ok(root.delete(rel)?),
        }
    }

    /// Deletes the files `rels` (an object store in as few requests as it allows).
    pub(super) fn remove_files(&self, rels: &[String]) -> Result<()> {
        match self {
            Remote::Local(_) => rels.iter().try_for_each(|rel| self.remove_file(rel)),
            Remote::Object(root) => Ok(root.delete_many(rels)?),
        }
    }

    /// Deletes the directory `rel` and everything below it.
    pub(super) fn remove_dir(&self, rel: &str) -> Result<()> {
        match self {
            Remote::Local(path) => {
                let dir = path.join(rel);
                match fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(io("remove old state snapshot", &dir)(e))
                    }
                    _ => Ok(()),
                }
            }
            Remote::Object(root) => root.delete_all(rel).map(|_| ()).map_err(Into::into),
        }
    }

    /// Publishes `manifest` as `epoch-N`, with the small files `small` (local paths) of a full
    /// snapshot, replacing an earlier attempt of the same epoch. Returns the bytes written.
    pub(super) fn publish(
        &self,
        manifest: &mut SnapshotManifest,
        small: &[(String, PathBuf)],
        incarnation: &str,
        durable: bool,
    ) -> Result<u64> {
        let epoch = epoch_dir(manifest.epoch.0);
        let mut written = 0;
        match self {
            Remote::Local(path) => {
                let staging = path.join(format!("{epoch}.{incarnation}.tmp"));
                let staged = Remote::Local(staging.clone());
                staged.remove_dir("")?;
                fs::create_dir_all(&staging).map_err(io("create state staging", &staging))?;
                for (name, from) in small {
                    let to = staging.join(name);
                    written += fs::copy(from, &to).map_err(io("upload state file", from))?;
                    if durable {
                        sync(&to)?;
                    }
                }
                let json = manifest_json(manifest, &staging)?;
                written += json.len() as u64;
                staged.write(MANIFEST, &json, durable)?;
                // An earlier attempt of this epoch that never committed.
                self.remove_dir(&epoch)?;
                let target = path.join(&epoch);
                fs::rename(&staging, &target).map_err(io("publish state snapshot", &target))?;
                if durable {
                    sync(path)?;
                }
            }
            Remote::Object(_) => {
                if !small.is_empty() {
                    manifest.small_dir = Some(incarnation.to_string());
                }
                for (name, from) in small {
                    written +=
                        self.upload(from, &format!("{epoch}/{incarnation}/{name}"), false)?;
                }
                let json = manifest_json(manifest, &self.name(&epoch))?;
                written += json.len() as u64;
                self.write(&format!("{epoch}/{MANIFEST}"), &json, durable)?;
            }
        }
        Ok(written)
    }
}

fn manifest_json(manifest: &SnapshotManifest, at: &Path) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(manifest).map_err(|e| CheckpointError::Corrupt {
        path: at.to_path_buf(),
        message: e.to_string(),
    })
}

/// Hard-links `from` to `to`, copying when they are on different file systems.
pub(super) fn link_or_copy(from: &Path, to: &Path) -> Result<u64> {
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to).map_err(io("copy state file", from))?;
    }
    Ok(fs::metadata(to).map_err(io("stat state file", to))?.len())
}

pub(super) fn sync(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io("sync", path))
}
