//! Planning: a job's SQL → DataFusion logical and physical plans → Sluice's stage DAG.
//!
//! Planning happens once per query on the driver. The result, [`PlannedQuery`], holds each
//! stage's physical plan (encoded once for executors to cache), the sources whose splits each
//! epoch assigns, and the sink.

pub mod broadcast;
mod closed_windows;
mod dedup;
mod preaggregate;
pub mod stages;
mod streaming;

pub use crate::operator::session_config;
use crate::operator::{codec, nodes, session, stateful, window_join};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::TableReference;
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{cast, col, Expr};
use datafusion::physical_plan::{displayable, ExecutionPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};
use sluice_connectors::file::FileSource;
use sluice_connectors::{FileFormat, FileSourceSpec, KafkaFormat, SinkSpec, Source, SourceSpec};

use crate::error::{EngineError, Result};
use crate::job::{sql_error, ColumnDecl, Job, Target};
use crate::protocol::{SinkInstall, StageId, StageInstall, StageOutput};
use codec::SluiceCodec;
use nodes::{schema_to_json, SourceScanExec};
pub use stages::Stage;
use streaming::{make_stateful, plan_bounded_sessions, stateful_group_columns, StatefulQuery};

/// A query planned into stages.
pub struct PlannedQuery {
    /// Stages in DAG order; the last is final.
    pub stages: Vec<Stage>,
    /// Encoded stage plans and their sinks, as sent to executors.
    pub install: Vec<StageInstall>,
    /// Where each query's rows go, in the job's order: one per `INSERT` (a statement set has
    /// several), or the console of a bare `SELECT`.
    pub sinks: Vec<PlannedSink>,
    /// Sources scanned, by table name.
    pub sources: BTreeMap<String, Arc<dyn Source>>,
    /// Hash identifying the query in its checkpoint.
    pub fingerprint: String,
    /// Stages holding stateful operators: their tasks stay on the executor holding their state.
    pub stateful_stages: Vec<StageId>,
    /// How far the watermark trails the largest event time (the largest declared delay), when
    /// the query declares a watermark.
    pub watermark_delay_ms: Option<i64>,
    /// Each watermarked table's delay: each source keeps its own watermark.
    pub watermark_delays: BTreeMap<String, i64>,
}

/// One query's sink.
#[derive(Debug, Clone)]
pub struct PlannedSink {
    /// The table written; `None` for a bare `SELECT`'s rows.
    pub table: Option<String>,
    /// The sink, resolved (a Kafka sink's key columns are decided).
    pub spec: SinkSpec,
    /// The sink as executors build it.
    pub install: SinkInstall,
    /// The query's final stage, whose tasks write it.
    pub stage: StageId,
}

impl fmt::Debug for PlannedQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlannedQuery")
            .field("stages", &self.stages.len())
            .finish()
    }
}

impl PlannedQuery {
    /// The final stage of a bare `SELECT` (or an `INSERT` into a console table), whose rows the
    /// driver fetches and prints.
    pub fn console_stage(&self) -> Option<StageId> {
        self.sinks
            .iter()
            .find(|s| s.spec.is_console())
            .map(|s| s.stage)
    }

    /// A readable rendering of the stage DAG (for `sluice explain`).
    pub fn explain(&self) -> String {
        let mut out = String::new();
        for stage in &self.stages {
            out.push_str(&format!(
                "Stage {} — {} task(s), output {:?}, reads stages {:?}\n",
                stage.id,
                stage.tasks,
                stage.output,
                stage.inputs.iter().map(|s| s.0).collect::<Vec<_>>()
            ));
            for line in displayable(stage.plan.as_ref())
                .indent(false)
                .to_string()
                .lines()
            {
                out.push_str("    ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// A stage's operators from its root down its first inputs, for error messages:
/// `ParquetSinkExec <- ProjectionExec <- StatefulAggregateExec <- ShuffleReaderExec`.
pub fn describe_stage(plan: &dyn datafusion::physical_plan::ExecutionPlan) -> String {
    let mut names = vec![plan.name().to_string()];
    let mut node = plan.children().first().map(|c| (*c).clone());
    while let Some(n) = node {
        names.push(n.name().to_string());
        node = n.children().first().map(|c| (*c).clone());
    }
    names.join(" <- ")
}

/// Tables smaller than this are broadcast to joins by default (`--broadcast-threshold`).
pub const DEFAULT_BROADCAST_BYTES: u64 = 10 << 20;

/// Plans `job` with `parallelism` partitions per shuffle and per scan, broadcasting join sides
/// under the default threshold.
pub async fn plan(job: &Job, parallelism: usize) -> Result<PlannedQuery> {
    plan_with(job, parallelism, DEFAULT_BROADCAST_BYTES).await
}

/// Plans `job`; a join side reading a bounded table of fewer than `broadcast_bytes` (0: none)
/// is broadcast (see [`broadcast`]).
pub async fn plan_with(
    job: &Job,
    parallelism: usize,
    broadcast_bytes: u64,
) -> Result<PlannedQuery> {
    tracing::trace!(target: "sluice::latency", "planning");
    let planned = plan_query(job, parallelism, broadcast_bytes).await;
    tracing::trace!(target: "sluice::latency", "planned");
    planned
}

async fn plan_query(job: &Job, parallelism: usize, broadcast_bytes: u64) -> Result<PlannedQuery> {
    let mut config = session_config(parallelism);
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.hash_join_single_partition_threshold = broadcast_bytes as usize;
    let mut ctx = SessionContext::new_with_config(config);
    {
        let state = ctx.state();
        let mut rules = Vec::new();
        for rule in state.physical_optimizers() {
            rules.push(rule.clone());
            if rule.name() == "join_selection" {
                rules.push(Arc::new(broadcast::BroadcastOnlyWhereSafe) as _);
            }
        }
        rules.push(Arc::new(preaggregate::PreAggregateBeforeUnnest) as _);
        let state =
            datafusion::execution::session_state::SessionStateBuilder::new_from_existing(state)
                .with_physical_optimizer_rules(rules)
                .build();
        ctx = SessionContext::new_with_state(state);
    }
    if !job.is_bounded() {
        // `count(DISTINCT x)` must stay one accumulator (whose state holds the distinct values)
        // for state to merge across epochs; DataFusion would otherwise turn it into a second
        // aggregation level.
        let state = ctx.state();
        let rules: Vec<_> = state
            .optimizers()
            .iter()
            .filter(|r| r.name() != "single_distinct_aggregation_to_group_by")
            .cloned()
            .collect();
        let state =
            datafusion::execution::session_state::SessionStateBuilder::new_from_existing(state)
                .with_optimizer_rules(rules)
                .build();
        ctx = SessionContext::new_with_state(state);
    }
    let origin = job.text.origin.as_str();
    let state = ctx.state();
    let mut sources = BTreeMap::new();
    for query in &job.queries {
        let statement = DfStatement::Statement(Box::new(Statement::Query(query.query.clone())));
        let references = state
            .resolve_table_references(&statement)
            .map_err(|e| sql_error(&job.text, &e))?;
        for reference in references {
            let name = reference.table().to_string();
            if let std::collections::btree_map::Entry::Vacant(entry) = sources.entry(name) {
                let source = register_source(&ctx, job, entry.key(), parallelism).await?;
                entry.insert(source);
            }
        }
    }
    let unbounded = sources.values().any(|s| !s.bounded());
    let set = job.queries.len() > 1;
    let mut plans = Vec::with_capacity(job.queries.len());
    let mut sinks = Vec::with_capacity(job.queries.len());
    let mut next_operator = 0;
    for query in &job.queries {
        let statement = DfStatement::Statement(Box::new(Statement::Query(query.query.clone())));
        let logical = state
            .statement_to_plan(statement)
            .await
            .map_err(|e| sql_error(&job.text, &e))?;
        let (logical, keep_first) = if unbounded {
            dedup::keep_first_by_key(logical, origin)?
        } else {
            (logical, false)
        };
        let mut frame = ctx
            .execute_logical_plan(logical)
            .await
            .map_err(|e| sql_error(&job.text, &e))?;
        let (sink, output_mode) = match &query.target {
            Target::Console => (SinkSpec::Console, None),
            Target::Table(name) => {
                let def = job
                    .table(name)
                    .ok_or_else(|| EngineError::Internal(format!("sink {name} vanished")))?;
                let sink = def.connector.as_sink().ok_or_else(|| EngineError::Sql {
                    location: def.location.clone(),
                    message: format!(
                        "table '{name}' cannot be written to: sinks are connectors 'parquet', 'kafka' and 'console'"
                    ),
                })?;
                if set && sink.is_console() {
                    return Err(EngineError::Sql {
                        location: query.location.clone(),
                        message: format!("table '{name}' prints rows (connector 'console'), which only a job with one query can do; a statement set writes Parquet or Kafka tables"),
                    });
                }
                // Rows written to a table with declared columns take their types and names.
                if let (Some(cols), false) = (&def.columns, sink.is_console()) {
                    frame = conform(frame, cols, &ctx, &job.text, &def.location).await?;
                }
                (sink, def.output_mode)
            }
        };
        let mut physical = frame.create_physical_plan().await?;
        if unbounded {
            let (plan, next) = make_stateful(
                physical,
                StatefulQuery {
                    job,
                    query,
                    mode: output_mode,
                    keep_first,
                    first_operator: next_operator,
                },
                &sources,
            )?;
            physical = plan;
            next_operator = next;
        } else {
            physical = plan_bounded_sessions(physical, job, query)?;
        }
        let (sink, install) = resolve_sink(sink, &physical)?;
        let output = if sink.is_console() {
            StageOutput::Result
        } else {
            StageOutput::Sink
        };
        plans.push((physical, output));
        let table = match &query.target {
            Target::Table(name) => Some(name.clone()),
            Target::Console => None,
        };
        sinks.push((sink, install, table));
    }
    plan_stages(plans, sinks, sources, job)
}

/// Registers the source table `name` (a table the job defines, or a path) with `ctx`.
async fn register_source(
    ctx: &SessionContext,
    job: &Job,
    name: &str,
    parallelism: usize,
) -> Result<Arc<dyn Source>> {
    let origin = job.text.origin.as_str();
    let (spec, source): (SourceSpec, Arc<dyn Source>) = match job.table(name) {
        Some(def) => {
            let spec = def
                .connector
                .as_source(name)
                .map_err(|e| EngineError::Sql {
                    location: def.location.clone(),
                    message: e.to_string(),
                })?;
            let declared = match &def.columns {
                Some(cols) => Some(declared_schema(ctx, &job.text, cols).await?),
                None => None,
            };
            match spec {
                SourceSpec::File(file) => {
                    let source = match declared {
                        Some(schema) => FileSource::declared(file, schema)?,
                        None => FileSource::infer(file)?,
                    };
                    (SourceSpec::File(source.spec().clone()), Arc::new(source))
                }
                SourceSpec::Kafka(kafka) => {
                    let schema = match (kafka.format, declared) {
                        (KafkaFormat::Json, Some(schema)) => schema,
                        (KafkaFormat::Json, None) => {
                            return Err(EngineError::Sql {
                                location: def.location.clone(),
                                message: format!(
                                    "table '{name}': format 'json' decodes into declared columns; declare them, e.g. CREATE TABLE {name} (id BIGINT, name VARCHAR) WITH (...)"
                                ),
                            })
                        }
                        (KafkaFormat::Raw, None) => sluice_connectors::kafka::raw_schema(),
                        (KafkaFormat::Raw, Some(_)) => {
                            return Err(EngineError::Sql {
                                location: def.location.clone(),
                                message: format!(
                                    "table '{name}': format 'raw' has fixed columns (key, value, topic, partition, offset, timestamp); declare none"
                                ),
                            })
                        }
                    };
                    let spec = SourceSpec::Kafka(kafka);
                    let source = spec.build(schema);
                    (spec, source)
                }
                SourceSpec::Nexmark(nexmark) => {
                    if declared.is_some() {
                        return Err(EngineError::Sql {
                            location: def.location.clone(),
                            message: format!(
                                "table '{name}': a nexmark table has the benchmark's fixed columns; declare none"
                            ),
                        });
                    }
                    let schema = sluice_connectors::nexmark::schema(nexmark.kind);
                    let spec = SourceSpec::Nexmark(nexmark);
                    let source = spec.build(schema);
                    (spec, source)
                }
            }
        }
        None if name.contains('/') || FileFormat::from_path(name).is_some() => {
            // `FROM 'data/bids/*.parquet'`: a table named by its path.
            if name.starts_with("s3://")
                && sluice_connectors::file::detect_object_format(name)?.is_none()
            {
                // (Listing the prefix can fail too: `?` says why, with the store's answer.)
                return Err(EngineError::Sql {
                    location: format!("{origin}: "),
                    message: format!("no .parquet, .csv or .json/.jsonl objects below '{name}'"),
                });
            }
            let format = FileFormat::detect(name).ok_or_else(|| EngineError::Sql {
                location: format!("{origin}: "),
                message: format!(
                    "cannot tell the format of '{name}': name files .parquet, .csv or .json/.jsonl"
                ),
            })?;
            let source = FileSource::infer(FileSourceSpec {
                table: name.to_string(),
                format,
                path: sluice_connectors::options::absolute(name),
                csv_header: true,
                csv_delimiter: b',',
                partition_columns: Vec::new(),
                stream: false,
                max_files_per_trigger: None,
                storage: Vec::new(),
            })?;
            (SourceSpec::File(source.spec().clone()), Arc::new(source))
        }
        None => {
            let mut known: Vec<&str> = job.tables.iter().map(|t| t.name.as_str()).collect();
            known.sort();
            return Err(EngineError::Sql {
                location: format!("{origin}: "),
                message: format!(
                    "unknown table '{name}' (defined: {}); define it with CREATE TABLE {name} (...) WITH (connector = ..., path = ...) or name a file path in quotes",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            });
        }
    };
    let event_time = match job.watermarks.iter().find(|w| w.table == name) {
        Some(w) => Some(
            source
                .schema()
                .index_of(&w.column)
                .map_err(|_| EngineError::Sql {
                    location: format!("{origin}: "),
                    message: format!(
                        "table '{name}': the watermark column '{}' is not in its schema",
                        w.column
                    ),
                })?,
        ),
        None => None,
    };
    ctx.register_table(
        TableReference::bare(name.to_string()),
        Arc::new(SourceTable {
            name: name.to_string(),
            spec,
            source: source.clone(),
            partitions: parallelism,
            event_time,
        }),
    )?;
    Ok(source)
}

/// Decides what the driver leaves open in a query's sink (a Kafka sink's key columns) and
/// checks its options against the query's output, once, on the driver rather than in every
/// task.
fn resolve_sink(
    mut sink: SinkSpec,
    physical: &Arc<dyn ExecutionPlan>,
) -> Result<(SinkSpec, SinkInstall)> {
    let schema = physical.schema();
    // A Kafka sink without explicit key columns keys a keyed aggregation's rows by its group
    // columns when they all reach the sink (an upsert stream); other rows have no key.
    if let SinkSpec::Kafka(spec) = &mut sink {
        if spec.key.is_none() {
            spec.key = Some(
                stateful_group_columns(physical)
                    .filter(|cols| cols.iter().all(|c| schema.index_of(c).is_ok()))
                    .unwrap_or_default(),
            );
        }
    }
    sink.writer(schema.clone())?;
    let install = SinkInstall {
        spec: sink.clone(),
        schema_json: schema_to_json(&schema),
    };
    Ok((sink, install))
}

fn plan_stages(
    plans: Vec<(Arc<dyn ExecutionPlan>, StageOutput)>,
    sinks: Vec<(SinkSpec, SinkInstall, Option<String>)>,
    sources: BTreeMap<String, Arc<dyn Source>>,
    job: &Job,
) -> Result<PlannedQuery> {
    let watermark_delay_ms = job.watermarks.iter().map(|w| w.delay_ms).max();
    let (stages, finals) = stages::split_all(plans)?;
    let sinks: Vec<PlannedSink> = sinks
        .into_iter()
        .zip(finals)
        .map(|((spec, install, table), stage)| PlannedSink {
            table,
            spec,
            install,
            stage,
        })
        .collect();
    let stateful_stages = stages
        .iter()
        .filter(|s| crate::operator::holds_state(&s.plan))
        .map(|s| s.id)
        .collect();
    let ctx_for_check = SessionContext::new_with_config(session_config(1));
    let mut install = Vec::with_capacity(stages.len());
    let task_ctx = ctx_for_check.task_ctx();
    for stage in &stages {
        let unsupported = |e: datafusion::error::DataFusionError| {
            EngineError::Unsupported(format!(
                "stage {} cannot be sent to executors: {}",
                stage.id,
                crate::error::describe_datafusion(&e)
            ))
        };
        let bytes = physical_plan_to_bytes_with_extension_codec(stage.plan.clone(), &SluiceCodec)
            .map_err(unsupported)?;
        // Executors decode what the driver encodes: check the round trip here, once, so an
        // operator that cannot be shipped fails planning with a clear message.
        physical_plan_from_bytes_with_extension_codec(&bytes, &task_ctx, &SluiceCodec)
            .map_err(unsupported)?;
        install.push(StageInstall {
            stage: stage.id,
            plan: bytes.to_vec(),
            output: stage.output,
            sink: sinks
                .iter()
                .find(|s| s.stage == stage.id)
                .map(|s| s.install.clone()),
        });
    }
    Ok(PlannedQuery {
        stages,
        install,
        sinks,
        sources,
        fingerprint: job.fingerprint.clone(),
        stateful_stages,
        watermark_delay_ms,
        watermark_delays: job
            .watermarks
            .iter()
            .map(|w| (w.table.clone(), w.delay_ms))
            .collect(),
    })
}

/// The Arrow schema of declared columns, with SQL types mapped by DataFusion itself.
async fn declared_schema(
    ctx: &SessionContext,
    text: &crate::job::JobText,
    cols: &[ColumnDecl],
) -> Result<arrow::datatypes::SchemaRef> {
    let select = cols
        .iter()
        .map(|c| {
            format!(
                "CAST(NULL AS {}) AS \"{}\"",
                c.sql_type,
                c.name.replace('"', "\"\"")
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let frame = ctx
        .sql(&format!("SELECT {select}"))
        .await
        .map_err(|e| sql_error(text, &e))?;
    let fields: Vec<_> = frame
        .schema()
        .fields()
        .iter()
        .zip(cols)
        .map(|(f, c)| f.as_ref().clone().with_nullable(!c.not_null))
        .collect();
    Ok(Arc::new(arrow::datatypes::Schema::new(fields)))
}

/// Casts and renames the query's columns to a sink's declared columns (by position).
async fn conform(
    frame: datafusion::dataframe::DataFrame,
    cols: &[ColumnDecl],
    ctx: &SessionContext,
    text: &crate::job::JobText,
    location: &str,
) -> Result<datafusion::dataframe::DataFrame> {
    let target = declared_schema(ctx, text, cols).await?;
    let fields = frame.schema().fields().clone();
    if fields.len() != target.fields().len() {
        return Err(EngineError::Sql {
            location: location.to_string(),
            message: format!(
                "the query produces {} columns but the table declares {}",
                fields.len(),
                target.fields().len()
            ),
        });
    }
    let exprs: Vec<Expr> = fields
        .iter()
        .zip(target.fields())
        .map(|(have, want)| {
            cast(
                col(datafusion::common::Column::from_name(have.name())),
                want.data_type().clone(),
            )
            .alias(want.name())
        })
        .collect();
    Ok(frame.select(exprs)?)
}

/// A source table as DataFusion sees it: its schema, and scans that become [`SourceScanExec`]s.
#[derive(Debug)]
struct SourceTable {
    name: String,
    spec: SourceSpec,
    source: Arc<dyn Source>,
    partitions: usize,
    /// Index of the watermark's event-time column.
    event_time: Option<usize>,
}

#[async_trait]
impl TableProvider for SourceTable {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.source.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(
            SourceScanExec::try_new(
                self.name.clone(),
                self.spec.clone(),
                self.source.schema(),
                projection.cloned(),
                self.partitions,
            )?
            .with_event_time(self.event_time.map(|column| nodes::EventTime {
                column,
                drop_late: false,
            }))
            .with_size_bytes(self.source.size_bytes()),
        ))
    }
}

/// Stage ids of `stages` in DAG order (a convenience for the scheduler).
pub fn stage_ids(stages: &[Stage]) -> Vec<StageId> {
    stages.iter().map(|s| s.id).collect()
}
