//! A job: the SQL text a user runs, parsed into table definitions and one query.
//!
//! ```sql
//! CREATE TABLE bids (auction BIGINT, price BIGINT, channel VARCHAR)
//!   WITH (connector = 'parquet', path = 'data/bids/');
//! CREATE TABLE totals WITH (connector = 'parquet', path = 'out/totals/', partition_by = 'channel');
//! INSERT INTO totals SELECT channel, count(*) AS n FROM bids GROUP BY channel;
//! ```
//!
//! Parsing is DataFusion's (sqlparser underneath); this module only interprets the statements.
//! Every error carries `SOURCE:LINE:COLUMN`.

use std::collections::BTreeMap;

use datafusion::error::DataFusionError;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    ColumnOption, CreateTableOptions, Expr, ObjectName, Query, Set, SqlOption, Statement,
    TableObject, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::Span;
use sha2::{Digest, Sha256};
use sluice_connectors::ConnectorSpec;

pub use crate::config::JobSetting;
use crate::error::{describe_datafusion, EngineError, Result};

pub mod check;
mod statement_set;
pub mod streaming_sql;
pub use streaming_sql::{WatermarkDecl, WindowDecl};

pub use crate::operator::OutputMode;

/// Where a job's text came from, for error locations.
#[derive(Debug, Clone)]
pub struct JobText {
    /// A file path, or `query` for `-e`.
    pub origin: String,
    /// The SQL.
    pub text: String,
}

/// A column declared in `CREATE TABLE`.
#[derive(Debug, Clone)]
pub struct ColumnDecl {
    /// Column name (lower-cased unless quoted).
    pub name: String,
    /// The SQL type as written, e.g. `BIGINT`.
    pub sql_type: String,
    /// Whether `NOT NULL` was declared.
    pub not_null: bool,
}

/// A table from `CREATE TABLE`.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Table name (lower-cased unless quoted).
    pub name: String,
    /// Declared columns; `None` when the schema is inferred (sources) or taken from the query
    /// (sinks).
    pub columns: Option<Vec<ColumnDecl>>,
    /// The validated connector options.
    pub connector: ConnectorSpec,
    /// Where the statement starts, for later errors about this table.
    pub location: String,
    /// `output_mode` of a sink table fed by a streaming aggregation.
    pub output_mode: Option<OutputMode>,
    /// `state_ttl` of a sink table fed by a streaming aggregation without windows: keys not
    /// updated for this long (milliseconds, by epoch batch time) are dropped.
    pub state_ttl_ms: Option<i64>,
}

/// Where a query's rows go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `INSERT INTO table`.
    Table(String),
    /// A bare `SELECT`: rows printed by the driver.
    Console,
}

/// One query of a job: an `INSERT INTO ... SELECT`, or a bare `SELECT`.
#[derive(Debug, Clone)]
pub struct JobQuery {
    /// The query (the `SELECT` part of an `INSERT`, or the bare `SELECT`).
    pub query: Box<Query>,
    /// Where its rows go.
    pub target: Target,
    /// Window table functions it uses.
    pub windows: Vec<WindowDecl>,
    /// Where its statement starts, for errors about it.
    pub location: String,
}

/// A parsed job.
#[derive(Debug, Clone)]
pub struct Job {
    /// The text it came from.
    pub text: JobText,
    /// Tables defined by the job, in order.
    pub tables: Vec<TableDef>,
    /// Its queries: one `SELECT`, or one or more `INSERT`s (several form a statement set: one
    /// query reading each source once, whose sinks commit together).
    pub queries: Vec<JobQuery>,
    /// Hash of the normalised statements; identifies the query in its checkpoint.
    pub fingerprint: String,
    /// The normalised statements the fingerprint covers, by part: `table NAME`,
    /// `watermark NAME`, `insert NAME` or `select` → its text (kept in the checkpoint, so that
    /// `sluice checkpoint check` can say which part of a changed job changed).
    pub parts: Vec<(String, String)>,
    /// Watermarks declared on tables.
    pub watermarks: Vec<WatermarkDecl>,
    /// `SET key = value;` statements: options of the command that runs the job
    /// (`crate::config`). They are not part of the fingerprint.
    pub settings: Vec<JobSetting>,
}

impl Job {
    /// Whether every table the job defines is bounded (files): such a job is one epoch.
    pub fn is_bounded(&self) -> bool {
        !self.tables.iter().any(|t| match &t.connector {
            ConnectorSpec::Kafka { .. } => true,
            ConnectorSpec::Nexmark(n) => n.events.is_none(),
            ConnectorSpec::Files { source, .. } => source.stream,
            _ => false,
        })
    }

    /// Parses a job: `CREATE TABLE` and `SET key = value` statements, then one `SELECT` or one
    /// or more `INSERT INTO ... SELECT` statements (bare, or in Flink's `EXECUTE STATEMENT SET
    /// BEGIN ... END;` / `BEGIN STATEMENT SET; ... END;`).
    pub fn parse(text: JobText) -> Result<Job> {
        let dialect = GenericDialect {};
        let (sql, watermarks) = streaming_sql::extract_watermarks(&text.origin, &text.text)?;
        let statements = DFParserBuilder::new(sql.as_str())
            .with_dialect(&dialect)
            .build()
            .and_then(|mut p| p.parse_statements())
            .map_err(|e| sql_error(&text, &e))?;
        let mut tables: Vec<TableDef> = Vec::new();
        let mut queries: Vec<(Box<Query>, Target, String)> = Vec::new();
        let mut normalised = String::new();
        let mut parts: Vec<(String, String)> = Vec::new();
        let mut settings = Vec::new();
        for statement in statements {
            if !matches!(&statement, DfStatement::Statement(s) if matches!(**s, Statement::Set(_)))
            {
                let text = statement.to_string();
                normalised.push_str(&text);
                normalised.push(';');
                let part = match &statement {
                    DfStatement::Statement(s) => match &**s {
                        Statement::CreateTable(c) => format!("table {}", object_name(&c.name)),
                        Statement::Insert(i) => match &i.table {
                            TableObject::TableName(t) => format!("insert {}", object_name(t)),
                            _ => "insert".into(),
                        },
                        Statement::Query(_) => "select".into(),
                        _ => "statement".into(),
                    },
                    _ => "statement".into(),
                };
                parts.push((part, text));
            }
            let DfStatement::Statement(statement) = statement else {
                return Err(EngineError::Sql {
                    location: format!("{}: ", text.origin),
                    message: format!(
                        "unsupported statement `{statement}`; a job holds CREATE TABLE ... WITH (...) statements and one INSERT INTO ... SELECT or SELECT"
                    ),
                });
            };
            let start = statement_span(&statement);
            let location = locate(&text.origin, start);
            if let Some((_, first, _)) = queries.first() {
                let message = match (&*statement, first) {
                    (_, Target::Console) => Some(
                        "a job runs one SELECT and nothing after it; to write several tables, \
                         use INSERT INTO statements (a statement set)",
                    ),
                    (Statement::Query(_), Target::Table(_)) => Some(
                        "a SELECT cannot follow an INSERT: the queries of a statement set are \
                         INSERT INTO ... SELECT statements",
                    ),
                    (Statement::Insert(_), _) => None,
                    _ => Some(
                        "only INSERT INTO statements may follow an INSERT; define tables and \
                         SET options before the first query",
                    ),
                };
                if let Some(message) = message {
                    return Err(EngineError::Sql {
                        location,
                        message: message.into(),
                    });
                }
            }
            match *statement {
                Statement::CreateTable(create) => {
                    let name = object_name(&create.name);
                    if tables.iter().any(|t| t.name == name) {
                        return Err(EngineError::Sql {
                            location,
                            message: format!("table '{name}' is defined twice"),
                        });
                    }
                    if create.query.is_some() {
                        return Err(EngineError::Sql {
                            location,
                            message: "CREATE TABLE ... AS SELECT is not supported; use CREATE TABLE then INSERT INTO".into(),
                        });
                    }
                    let raw = match &create.table_options {
                        CreateTableOptions::With(opts) => opts.clone(),
                        CreateTableOptions::None => Vec::new(),
                        _ => {
                            return Err(EngineError::Sql {
                                location,
                                message: format!("table '{name}': options must be given as WITH (key = 'value', ...)"),
                            })
                        }
                    };
                    let mut options = BTreeMap::new();
                    for opt in raw {
                        let SqlOption::KeyValue { key, value } = opt else {
                            return Err(EngineError::Sql {
                                location,
                                message: format!("table '{name}': options must be key = 'value' pairs"),
                            });
                        };
                        let value = option_value(&value).ok_or_else(|| EngineError::Sql {
                            location: locate(&text.origin, key.span),
                            message: format!("table '{name}': option '{}' needs a literal value", key.value),
                        })?;
                        options.insert(key.value.to_ascii_lowercase(), value);
                    }
                    let output_mode = match options.remove("output_mode") {
                        Some(mode) => Some(mode.parse::<OutputMode>().map_err(|m| EngineError::Sql {
                            location: location.clone(),
                            message: format!("table '{name}': {m}"),
                        })?),
                        None => None,
                    };
                    let state_ttl_ms = match options.remove("state_ttl") {
                        Some(text) => match streaming_sql::duration_ms(&text) {
                            Ok(ms) if ms > 0 => Some(ms),
                            Ok(_) => {
                                return Err(EngineError::Sql {
                                    location: location.clone(),
                                    message: format!("table '{name}': state_ttl must be positive, not '{text}'"),
                                })
                            }
                            Err(m) => {
                                return Err(EngineError::Sql {
                                    location: location.clone(),
                                    message: format!("table '{name}': state_ttl: {m}"),
                                })
                            }
                        },
                        None => None,
                    };
                    let connector = ConnectorSpec::parse(&name, &options).map_err(|e| EngineError::Sql {
                        location: location.clone(),
                        message: e.to_string(),
                    })?;
                    let columns = (!create.columns.is_empty()).then(|| {
                        create
                            .columns
                            .iter()
                            .map(|c| ColumnDecl {
                                name: ident_name(&c.name),
                                sql_type: c.data_type.to_string(),
                                not_null: c.options.iter().any(|o| matches!(o.option, ColumnOption::NotNull)),
                            })
                            .collect()
                    });
                    tables.push(TableDef { name, columns, connector, location, output_mode, state_ttl_ms });
                }
                Statement::Insert(insert) => {
                    let TableObject::TableName(target) = &insert.table else {
                        return Err(EngineError::Sql {
                            location,
                            message: "INSERT INTO a table function is not supported".into(),
                        });
                    };
                    let target = object_name(target);
                    if !tables.iter().any(|t| t.name == target) {
                        return Err(EngineError::Sql {
                            location,
                            message: format!("INSERT INTO unknown table '{target}'; define it first with CREATE TABLE {target} WITH (...)"),
                        });
                    }
                    if !insert.columns.is_empty() {
                        return Err(EngineError::Sql {
                            location,
                            message: "INSERT INTO t (columns) is not supported; select the columns in the query".into(),
                        });
                    }
                    let Some(source) = insert.source else {
                        return Err(EngineError::Sql { location, message: "INSERT needs a SELECT".into() });
                    };
                    if queries.iter().any(|(_, t, _)| *t == Target::Table(target.clone())) {
                        return Err(EngineError::Sql {
                            location,
                            message: format!("table '{target}' is written by two INSERTs; combine their queries with UNION ALL in one"),
                        });
                    }
                    queries.push((source, Target::Table(target), location));
                }
                Statement::Query(q) => queries.push((q, Target::Console, location)),
                Statement::Set(set) => settings.push(setting(&text.origin, &location, set)?),
                other => {
                    return Err(EngineError::Sql {
                        location,
                        message: format!(
                            "unsupported statement `{}`; a job holds CREATE TABLE ... WITH (...) statements and one INSERT INTO ... SELECT or SELECT",
                            first_words(&other.to_string())
                        ),
                    })
                }
            }
        }
        if queries.is_empty() {
            return Err(EngineError::Sql {
                location: format!("{}: ", text.origin),
                message: "the job has no INSERT INTO ... SELECT or SELECT statement".into(),
            });
        }
        for w in &watermarks {
            let declared = tables
                .iter()
                .find(|t| t.name == w.table)
                .map(|t| t.columns.as_ref())
                // Tables with fixed columns declare none; the planner checks their schema.
                .is_some_and(|cols| {
                    cols.is_none_or(|cols| cols.iter().any(|c| c.name == w.column))
                });
            if !declared {
                return Err(EngineError::Sql {
                    location: format!("{}: ", text.origin),
                    message: format!(
                        "table '{}': WATERMARK FOR {} names a column the table does not declare",
                        w.table, w.column
                    ),
                });
            }
            let text = format!("WATERMARK {} {} {};", w.table, w.column, w.delay_ms);
            normalised.push_str(&text);
            parts.push((format!("watermark {}", w.table), text));
        }
        let queries = queries
            .into_iter()
            .map(|(mut query, target, location)| {
                let windows = streaming_sql::rewrite_windows(&text.origin, &mut query)?;
                Ok(JobQuery {
                    query,
                    target,
                    windows,
                    location,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let fingerprint = hex::encode(&Sha256::digest(normalised.as_bytes())[..12]);
        Ok(Job {
            text,
            tables,
            queries,
            fingerprint,
            parts,
            watermarks,
            settings,
        })
    }

    /// The definition of table `name`, if the job has one.
    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables.iter().find(|t| t.name == name)
    }
}

fn statement_span(statement: &Statement) -> Span {
    use datafusion::sql::sqlparser::ast::Spanned;
    statement.span()
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn object_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(ident_name)
        .collect::<Vec<_>>()
        .join(".")
}

fn ident_name(ident: &datafusion::sql::sqlparser::ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

fn option_value(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.to_string()),
            Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        },
        Expr::Identifier(i) => Some(i.value.clone()),
        _ => None,
    }
}

/// `ORIGIN:LINE:COLUMN: ` for a span, or `ORIGIN: ` when the span is unknown.
/// A `SET key = value` statement as a [`JobSetting`], located at its key.
fn setting(origin: &str, statement: &str, set: Set) -> Result<JobSetting> {
    use datafusion::sql::sqlparser::ast::Spanned;
    let Set::SingleAssignment {
        variable, values, ..
    } = set
    else {
        return Err(EngineError::Sql {
            location: statement.to_string(),
            message: format!(
            "unsupported SET statement `{set}`; use SET key = value (a `sluice run` option, e.g. SET trigger = '500ms')"
            ),
        });
    };
    let location = locate(origin, variable.span());
    let error = |message: String| EngineError::Sql {
        location: location.clone(),
        message,
    };
    let key = variable.to_string();
    let value = match values.as_slice() {
        [Expr::Value(v)] => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.clone()),
            Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        },
        [Expr::Identifier(i)] => Some(i.value.clone()),
        _ => None,
    };
    let value = value.ok_or_else(|| {
        error(format!(
            "SET {key}: the value must be one literal ('500ms', 4, true)"
        ))
    })?;
    Ok(JobSetting {
        key,
        value,
        location: location.trim_end_matches(": ").to_string(),
    })
}

pub fn locate(origin: &str, span: Span) -> String {
    if span.start.line == 0 {
        format!("{origin}: ")
    } else {
        format!("{origin}:{}:{}: ", span.start.line, span.start.column)
    }
}

/// Turns a DataFusion parse or planning error into an [`EngineError::Sql`] located in the job
/// text: from the error's diagnostic span when DataFusion attached one, else from the
/// `at Line: L, Column: C` the parser writes into its messages.
pub fn sql_error(text: &JobText, e: &DataFusionError) -> EngineError {
    let origin = text.origin.as_str();
    let message = describe_datafusion(e);
    if let Some(span) = e.diagnostic().and_then(|d| d.span) {
        return EngineError::Sql {
            location: format!("{origin}:{}:{}: ", span.start.line, span.start.column),
            message: clean(&message),
        };
    }
    if let Some(idx) = message.find(" at Line: ") {
        let rest = &message[idx + " at Line: ".len()..];
        let mut nums = rest
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u64>().unwrap_or(0));
        if let (Some(line), Some(col)) = (nums.next(), nums.next()) {
            let head = clean(&message[..idx]);
            return EngineError::Sql {
                location: format!("{origin}:{line}:{col}: "),
                message: head,
            };
        }
    }
    // Some semantic errors carry no span; point at the first use of the name they mention.
    if let Some((line, col)) = missing_name(&message).and_then(|n| find_word(&text.text, &n)) {
        return EngineError::Sql {
            location: format!("{origin}:{line}:{col}: "),
            message: clean(&message),
        };
    }
    EngineError::Sql {
        location: format!("{origin}: "),
        message: clean(&message),
    }
}

/// The identifier an "unknown name" error is about.
fn missing_name(message: &str) -> Option<String> {
    let rest = &message[message.find("No field named ")? + "No field named ".len()..];
    let name: String = rest
        .trim_start_matches(['"', '\''])
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
        .collect();
    let name = name.trim_end_matches('.').rsplit('.').next()?.to_string();
    (!name.is_empty()).then_some(name)
}

/// 1-based line and column of the first whole-word occurrence of `word` in `text`
/// (ASCII case-insensitive, as SQL identifiers are).
fn find_word(text: &str, word: &str) -> Option<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    let word = word.to_ascii_lowercase();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(pos) = lower[from..].find(&word) {
        let start = from + pos;
        let end = start + word.len();
        let before_ok = lower[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !is_ident(c));
        let after_ok = lower[end..].chars().next().is_none_or(|c| !is_ident(c));
        if before_ok && after_ok {
            let line = text[..start].matches('\n').count() + 1;
            let col = start - text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            return Some((line, col));
        }
        from = end;
    }
    None
}

fn clean(message: &str) -> String {
    let m = message.trim();
    let m = m.strip_prefix("SQL error: ").unwrap_or(m);
    let m = m.strip_prefix("ParserError(\"").unwrap_or(m);
    let m = m.strip_prefix("sql parser error: ").unwrap_or(m);
    m.trim_end_matches("\")").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Result<Job> {
        Job::parse(JobText {
            origin: "job.sql".into(),
            text: sql.into(),
        })
    }

    #[test]
    fn ddl_and_insert() {
        let job = parse(
            "CREATE TABLE bids (auction BIGINT NOT NULL, channel VARCHAR) WITH (connector = 'parquet', path = 'in/');\n\
             CREATE TABLE out WITH (connector = 'parquet', path = 'o/', partition_by = 'channel');\n\
             INSERT INTO out SELECT channel, count(*) FROM bids GROUP BY channel;",
        )
        .unwrap();
        assert_eq!(job.tables.len(), 2);
        let cols = job.tables[0].columns.as_ref().unwrap();
        assert!(cols[0].not_null && !cols[1].not_null);
        assert!(job.tables[1].columns.is_none());
        assert_eq!(job.queries[0].target, Target::Table("out".into()));
        // Whitespace does not change the fingerprint; the query does.
        let again = parse(
            "CREATE TABLE bids (auction BIGINT NOT NULL, channel VARCHAR) WITH (connector = 'parquet', path = 'in/');\
             CREATE TABLE out WITH (connector = 'parquet', path = 'o/', partition_by = 'channel');   \
             INSERT INTO out SELECT channel, count(*) FROM bids   GROUP BY channel;",
        )
        .unwrap();
        assert_eq!(job.fingerprint, again.fingerprint);
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = parse("CREATE TABLE t WITH (connector = 'csv', path = 'x');\nSELEC * FROM t;")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("job.sql:2:1: "), "{text}");
    }

    #[test]
    fn unknown_connector_is_located() {
        let err = parse("\n\nCREATE TABLE t WITH (connector = 'kafkaa', path = 'x');\nSELECT 1;")
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("job.sql:3:") && text.contains("unknown connector 'kafkaa'"),
            "{text}"
        );
    }

    #[test]
    fn unknown_names_are_located_in_the_text() {
        let text = JobText {
            origin: "j.sql".into(),
            text: "SELECT a,\n  sum(b) FROM t GROUP BY auctio;".into(),
        };
        let err = DataFusionError::SchemaError(
            Box::new(datafusion::common::SchemaError::FieldNotFound {
                field: Box::new(datafusion::common::Column::from_name("auctio")),
                valid_fields: vec![],
            }),
            Box::new(None),
        );
        assert_eq!(
            sql_error(&text, &err).to_string().split(' ').next(),
            Some("j.sql:2:26:")
        );
    }

    /// Nested constructs that sqlparser parses speculatively and re-parses on failure (`CAST`,
    /// `POSITION`, `INTERVAL` operands) with an error deep inside: sqlparser 0.62 took time
    /// exponential in the nesting (24 `CAST(` ~20 s, 16 `POSITION(` > 30 s in a debug build);
    /// the patched parser (`vendor/sqlparser`) rejects each at once, at the right place.
    #[test]
    fn malformed_nesting_is_rejected_in_linear_time() {
        let nested = |open: &str, n: usize, inner: &str, close: &str| {
            format!("SELECT {}{inner}{};", open.repeat(n), close.repeat(n))
        };
        let cases = [
            (nested("CAST(", 24, "x AS", ""), "1:"),
            (nested("POSITION(", 16, "x AS ", ")"), "1:"),
            (nested("INTERVAL CAST(", 24, "", ""), "1:"),
            (nested("SUBSTRING(", 24, "x AS ", ")"), "1:"),
            (format!("SELECT\n{}\n1 +;", "ARRAY[".repeat(20)), "3:"),
            // Each `(` of a table factor is tried as a derived table, then as a nested join
            // (found by the streaming_sql fuzz target: 29 s for a 1 KB text).
            (
                format!("SELECT a FROM {}x +;", "(((((SELECT a FROM ".repeat(5)),
                "1:",
            ),
        ];
        for (sql, at) in cases {
            let started = std::time::Instant::now();
            let err = parse(&sql).unwrap_err().to_string();
            let took = started.elapsed();
            assert!(took < std::time::Duration::from_secs(1), "{took:?}: {sql}");
            assert!(err.starts_with(&format!("job.sql:{at}")), "{err}");
        }
        // Valid nesting still parses.
        parse(&nested("CAST(", 20, "1", " AS BIGINT)")).unwrap();
    }

    #[test]
    fn set_statements_are_settings_outside_the_fingerprint() {
        let job = parse(
            "SET trigger = '500ms';\nSET parallelism = 4;\nSET no_fsync = true;\n\
             CREATE TABLE t WITH (connector = 'parquet', path = 'in/');\nSELECT * FROM t;",
        )
        .unwrap();
        let got: Vec<_> = job
            .settings
            .iter()
            .map(|s| (s.key.as_str(), s.value.as_str(), s.location.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("trigger", "500ms", "job.sql:1:5"),
                ("parallelism", "4", "job.sql:2:5"),
                ("no_fsync", "true", "job.sql:3:5")
            ]
        );
        let plain =
            parse("CREATE TABLE t WITH (connector = 'parquet', path = 'in/');\nSELECT * FROM t;")
                .unwrap();
        assert_eq!(job.fingerprint, plain.fingerprint);
        let err = parse("SET trigger = '1s' || 'x';\nSELECT 1;")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("job.sql:1:5: SET trigger: the value must be one literal"),
            "{err}"
        );
    }

    #[test]
    fn insert_into_undefined_table() {
        let err = parse("INSERT INTO nowhere SELECT 1;").unwrap_err();
        assert!(err.to_string().contains("unknown table 'nowhere'"), "{err}");
    }

    #[test]
    fn several_inserts_form_a_statement_set_in_any_of_flinks_spellings() {
        let tables = "CREATE TABLE t WITH (connector = 'parquet', path = 'in/');\n\
                      CREATE TABLE a WITH (connector = 'parquet', path = 'a/');\n\
                      CREATE TABLE b WITH (connector = 'parquet', path = 'b/');\n";
        let bare = parse(&format!(
            "{tables}INSERT INTO a SELECT * FROM t;\nINSERT INTO b SELECT count(*) FROM t;"
        ))
        .unwrap();
        let targets = |job: &Job| {
            job.queries
                .iter()
                .map(|q| q.target.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            targets(&bare),
            [Target::Table("a".into()), Target::Table("b".into())]
        );
        for (open, close) in [
            ("EXECUTE STATEMENT SET\nBEGIN\n", "END;"),
            ("execute statement set begin ", "end"),
            ("BEGIN STATEMENT SET;\n", "END;\n"),
        ] {
            let job = parse(&format!(
                "{tables}{open}INSERT INTO a SELECT * FROM t;\nINSERT INTO b SELECT count(*) FROM t;\n{close}"
            ))
            .unwrap();
            assert_eq!(targets(&job), targets(&bare), "{open}");
            // The brackets are spelling only: the same checkpoint fits either form.
            assert_eq!(job.fingerprint, bare.fingerprint, "{open}");
        }
        // A CASE ... END inside a query is not the set's END.
        parse(&format!("{tables}EXECUTE STATEMENT SET BEGIN\nINSERT INTO a SELECT CASE WHEN 1 > 0 THEN 1 END FROM t;\nEND;")).unwrap();
        let err = |sql: String| parse(&sql).unwrap_err().to_string();
        let e = err(format!(
            "{tables}EXECUTE STATEMENT SET BEGIN\nINSERT INTO a SELECT * FROM t;"
        ));
        assert!(
            e.starts_with("job.sql:4:1: ") && e.contains("has no END"),
            "{e}"
        );
        let e = err(format!(
            "{tables}INSERT INTO a SELECT * FROM t;\nINSERT INTO a SELECT * FROM t;"
        ));
        assert!(
            e.starts_with("job.sql:5:1: ") && e.contains("UNION ALL"),
            "{e}"
        );
        let e = err(format!(
            "{tables}INSERT INTO a SELECT * FROM t;\nSELECT * FROM t;"
        ));
        assert!(
            e.starts_with("job.sql:5:1: ") && e.contains("cannot follow an INSERT"),
            "{e}"
        );
        let e = err(format!(
            "{tables}SELECT * FROM t;\nINSERT INTO a SELECT * FROM t;"
        ));
        assert!(
            e.starts_with("job.sql:5:1: ") && e.contains("one SELECT"),
            "{e}"
        );
        let e = err(format!("{tables}INSERT INTO a SELECT * FROM t;\nCREATE TABLE c WITH (connector = 'parquet', path = 'c/');"));
        assert!(
            e.starts_with("job.sql:5:") && e.contains("before the first query"),
            "{e}"
        );
    }
}
