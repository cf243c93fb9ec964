//! A run's private directory.

use std::path::PathBuf;

use crate::error::{EngineError, Result};

/// A run's private directory (certificates, executor work directories, temporary checkpoint);
/// removed when the run ends unless the user chose it.
pub(crate) struct RunDir {
    pub(crate) path: PathBuf,
    remove: bool,
}

impl RunDir {
    pub(crate) fn create(chosen: Option<&std::path::Path>) -> Result<Self> {
        let (path, remove) = match chosen {
            Some(p) => (p.to_path_buf(), false),
            None => (
                std::env::temp_dir().join(format!("sluice-run-{}", uuid::Uuid::new_v4().simple())),
                true,
            ),
        };
        std::fs::create_dir_all(&path)
            .map_err(|e| EngineError::Cluster(format!("creating {}: {e}", path.display())))?;
        Ok(Self { path, remove })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
