//! Progress records read back from a checkpoint (`progress/N`, one JSON document per epoch),
//! as `sluice checkpoint inspect` and a monitoring tool would read them.

use std::path::Path;

/// Every progress record under `checkpoint/progress`, in epoch order (none when the directory
/// does not exist yet).
pub fn records(checkpoint: &Path) -> Vec<serde_json::Value> {
    let Ok(dir) = std::fs::read_dir(checkpoint.join("progress")) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, serde_json::Value)> = dir
        .flatten()
        .filter_map(|e| {
            let epoch = e.file_name().to_str()?.parse::<u64>().ok()?;
            let record = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((epoch, record))
        })
        .collect();
    out.sort_by_key(|(epoch, _)| *epoch);
    out.into_iter().map(|(_, record)| record).collect()
}

/// The progress record of `epoch`.
pub fn record(checkpoint: &Path, epoch: u64) -> serde_json::Value {
    let path = checkpoint.join("progress").join(epoch.to_string());
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
