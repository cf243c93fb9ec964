//! The checkpoint's records on an object store: the same names as on disk, conditional PUTs
//! where a file system would rename without replacing.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::{corrupt, now_ms, parse_json, to_json, QueryMetadata, FORMAT_VERSION};
use crate::error::{CheckpointError, Result};
use crate::location::ObjectRoot;
use crate::recovery::{ownership, Ownership};
use crate::QueryId;

/// Opens or creates the checkpoint under `object` (as [`CheckpointStore::open_or_create`]).
pub(super) fn object_open_or_create(
    object: &ObjectRoot,
    fingerprint: &str,
    new_query_id: &QueryId,
) -> Result<QueryMetadata> {
    let url = object.url_of("metadata");
    match object.get("metadata")? {
        Some((bytes, version)) => {
            let found: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(Path::new(&url), e))?;
            let format = found.get("format_version").and_then(|v| v.as_u64());
            let format = format.ok_or_else(|| corrupt(Path::new(&url), "no format_version"))?;
            if format != u64::from(FORMAT_VERSION) {
                return Err(CheckpointError::IncompatibleFormat {
                    path: object.url().into(),
                    expected: FORMAT_VERSION,
                    found: format as u32,
                });
            }
            let found: QueryMetadata =
                serde_json::from_value(found).map_err(|e| corrupt(Path::new(&url), e))?;
            let recorded_any = !object.list_names("offsets")?.is_empty();
            match ownership(&found.plan_fingerprint, fingerprint, recorded_any) {
                Ownership::Resume => Ok(found),
                Ownership::Refuse => Err(CheckpointError::FingerprintMismatch {
                    path: object.url().into(),
                    expected: fingerprint.to_string(),
                    found: found.plan_fingerprint,
                }),
                Ownership::Adopt => {
                    let adopted = QueryMetadata {
                        plan_fingerprint: fingerprint.to_string(),
                        ..found
                    };
                    let mode = object_store::PutMode::Update(version.into());
                    object.put("metadata", to_json(&adopted), mode)?;
                    Ok(adopted)
                }
            }
        }
        None => {
            let metadata = QueryMetadata {
                format_version: FORMAT_VERSION,
                query_id: new_query_id.clone(),
                plan_fingerprint: fingerprint.to_string(),
                created_at_ms: now_ms(),
            };
            match object.put(
                "metadata",
                to_json(&metadata),
                object_store::PutMode::Create,
            ) {
                Ok(_) => Ok(metadata),
                // Another driver created it at the same moment: open what it wrote.
                Err(e) if e.is_conflict() => {
                    object_open_or_create(object, fingerprint, new_query_id)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Creates `rel` only if absent (`If-None-Match: *`); [`CheckpointError::Fenced`] if it exists
/// with other contents. The same contents are this write itself: a PUT whose answer was lost
/// (a timeout, a dropped connection) and that the client retried finds its own object.
pub(super) fn object_create(object: &ObjectRoot, rel: &str, bytes: &[u8]) -> Result<()> {
    match object.put(rel, bytes.to_vec(), object_store::PutMode::Create) {
        Ok(_) => Ok(()),
        Err(e) if e.is_conflict() => match object.get(rel)? {
            Some((found, _)) if found[..] == bytes[..] => Ok(()),
            _ => Err(CheckpointError::Fenced {
                path: object.url_of(rel).into(),
            }),
        },
        Err(e) => Err(e.into()),
    }
}

pub(super) fn object_put(object: &ObjectRoot, rel: &str, bytes: Vec<u8>) -> Result<()> {
    object.put(rel, bytes, object_store::PutMode::Overwrite)?;
    Ok(())
}

pub(super) fn object_read<T: DeserializeOwned>(
    object: &ObjectRoot,
    rel: &str,
) -> Result<Option<T>> {
    match object.get(rel)? {
        Some((bytes, _)) => parse_json(Path::new(&object.url_of(rel)), &bytes).map(Some),
        None => Ok(None),
    }
}

/// [`CheckpointStore::retain`] on an object store: deletes by name after a first listing;
/// `from` is the oldest epoch whose entries may still exist (`None`: not known yet).
pub(super) fn object_retain(
    object: &ObjectRoot,
    from: &mut Option<u64>,
    oldest_kept: u64,
) -> Result<()> {
    let mut dirs: Vec<String> = vec!["offsets".into(), "commits".into(), "progress".into()];
    dirs.extend(
        object
            .list_names("sinks")?
            .into_iter()
            .map(|name| format!("sinks/{name}")),
    );
    for dir in dirs {
        let expired: Vec<u64> = match *from {
            Some(from) => (from..oldest_kept).collect(),
            None => object
                .list_names(&dir)?
                .iter()
                .filter_map(|n| n.parse::<u64>().ok())
                .filter(|&n| n < oldest_kept)
                .collect(),
        };
        for n in expired {
            object.delete(&format!("{dir}/{n}"))?;
        }
    }
    *from = Some(from.map_or(oldest_kept, |f| f.max(oldest_kept)));
    Ok(())
}
