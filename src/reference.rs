//! The independent answer every end-to-end test compares Sluice's output with: DataFusion
//! computing the same query in this process, in one batch, over the same input. Rows are
//! rendered as strings (see [`crate::table::batch_rows`]) and sorted.

use std::path::Path;

use datafusion::prelude::{
    CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionConfig, SessionContext,
};

/// A table's input.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A Parquet file or directory.
    Parquet(&'a Path),
    /// A CSV file or directory, with a header.
    Csv(&'a Path),
    /// A directory (or file) of `.json` newline-delimited JSON.
    Json(&'a Path),
    /// One `.jsonl` log of newline-delimited JSON (what streaming tests produced).
    JsonLines(&'a Path),
}

/// A DataFusion session (time zone UTC) with tables registered, ready for queries.
pub struct Reference {
    runtime: tokio::runtime::Runtime,
    ctx: SessionContext,
}

impl Default for Reference {
    fn default() -> Self {
        Self::new()
    }
}

impl Reference {
    /// An empty session.
    pub fn new() -> Self {
        let config = SessionConfig::new().set_str("datafusion.execution.time_zone", "+00:00");
        Self {
            runtime: tokio::runtime::Runtime::new().expect("a tokio runtime"),
            ctx: SessionContext::new_with_config(config),
        }
    }

    /// Registers `input` as table `name`.
    pub fn table(self, name: &str, input: Input<'_>) -> Self {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let ctx = &self.ctx;
        let registered = self.runtime.block_on(async {
            match input {
                Input::Parquet(p) => {
                    ctx.register_parquet(name, &path(p), ParquetReadOptions::default())
                        .await
                }
                Input::Csv(p) => {
                    ctx.register_csv(name, &path(p), CsvReadOptions::new())
                        .await
                }
                Input::Json(p) => {
                    ctx.register_json(name, &path(p), JsonReadOptions::default())
                        .await
                }
                Input::JsonLines(p) => {
                    let options = JsonReadOptions::default().file_extension(".jsonl");
                    ctx.register_json(name, &path(p), options).await
                }
            }
        });
        registered.unwrap_or_else(|e| panic!("registering {name} ({input:?}): {e}"));
        self
    }

    /// Defines view `name` as `select`.
    pub fn view(self, name: &str, select: &str) -> Self {
        let sql = format!("CREATE VIEW {name} AS {select}");
        self.runtime
            .block_on(async { self.ctx.sql(&sql).await?.collect().await })
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        self
    }

    /// The rows `sql` gives, rendered and sorted.
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let batches = self
            .runtime
            .block_on(async { self.ctx.sql(sql).await?.collect().await })
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut rows: Vec<Vec<String>> =
            batches.iter().flat_map(crate::table::batch_rows).collect();
        rows.sort();
        rows
    }
}
