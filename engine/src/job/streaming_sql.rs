//! The streaming extensions of Sluice's SQL, turned into what DataFusion's parser and planner
//! understand.
//!
//! - `WATERMARK FOR col AS col - INTERVAL '4' SECOND` inside `CREATE TABLE (...)`: sqlparser
//!   has no such clause, so it is lifted out of the text before parsing (replaced by spaces, so
//!   every other error keeps its line and column) and returned as a [`WatermarkDecl`].
//! - Window table-valued functions in `FROM`, as in Flink:
//!   `TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))` and
//!   `TABLE(HOP(bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))`
//!   (slide, then size). Each becomes a derived table holding every column of the input plus
//!   `window_start` and `window_end`; a hopping window repeats a row once per window holding it.
//!   `TABLE(SESSION(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))` gives each row the
//!   proto-session `[t, t + gap)`, merged per key by the aggregation (`operator::session`).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    DateTimeField, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Query, SetExpr,
    TableFactor, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Word};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// A watermark declared on a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkDecl {
    /// The table.
    pub table: String,
    /// Its event-time column.
    pub column: String,
    /// How far the watermark trails the largest event time seen, in milliseconds.
    pub delay_ms: i64,
}

pub(super) fn sql_err(origin: &str, line: u64, column: u64, message: String) -> EngineError {
    EngineError::Sql {
        location: format!("{origin}:{line}:{column}: "),
        message,
    }
}

pub(super) fn is_word(token: &Token, keyword: &str) -> bool {
    matches!(token, Token::Word(Word { value, .. }) if value.eq_ignore_ascii_case(keyword))
}

fn word_name(token: &Token) -> Option<String> {
    match token {
        Token::Word(w) if w.quote_style.is_some() => Some(w.value.clone()),
        Token::Word(w) => Some(w.value.to_ascii_lowercase()),
        _ => None,
    }
}

/// Byte offset of a 1-based (line, column) in `text`.
pub(super) fn offset(text: &str, line: u64, column: u64) -> usize {
    let mut pos = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i as u64 + 1 == line {
            return pos
                + l.char_indices()
                    .nth(column.saturating_sub(1) as usize)
                    .map(|(b, _)| b)
                    .unwrap_or(l.len());
        }
        pos += l.len();
    }
    text.len()
}

/// `s` blanked: each character a space per byte of it, newlines kept. The text keeps its byte
/// length, so offsets computed in the original text stay valid in the blanked one (a clause
/// holding a multi-byte character, e.g. in a comment, once shortened the text and a later
/// offset fell outside it — a panic found by fuzzing `streaming_sql`).
pub(super) fn blanked(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let (fill, n) = if c == '\n' {
                ('\n', 1)
            } else {
                (' ', c.len_utf8())
            };
            std::iter::repeat_n(fill, n)
        })
        .collect()
}

/// Lifts every `WATERMARK FOR ...` clause out of `text`, and blanks the `TABLE` keyword of
/// Flink's window-function form `TUMBLE(TABLE bids, ...)`, which sqlparser does not accept inside
/// function arguments (see [`blank_table_arguments`]).
pub fn extract_watermarks(origin: &str, text: &str) -> Result<(String, Vec<WatermarkDecl>)> {
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, text).tokenize_with_location() else {
        // The parser reports tokenizer errors with their location.
        return Ok((text.to_string(), Vec::new()));
    };
    let tokens: Vec<_> = tokens
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let mut out = text.to_string();
    super::statement_set::blank_brackets(origin, text, &tokens, &mut out)?;
    blank_table_arguments(text, &tokens, &mut out);
    let mut decls = Vec::new();
    let mut table: Option<String> = None;
    let mut depth = 0i32;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i].token;
        if is_word(t, "CREATE")
            && tokens
                .get(i + 1)
                .is_some_and(|n| is_word(&n.token, "TABLE"))
        {
            table = tokens.get(i + 2).and_then(|n| word_name(&n.token));
            depth = 0;
        }
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        let starts_clause = depth == 1
            && is_word(t, "WATERMARK")
            && tokens.get(i + 1).is_some_and(|n| is_word(&n.token, "FOR"));
        if !starts_clause {
            i += 1;
            continue;
        }
        let at = tokens[i].span.start;
        let Some(table_name) = table.clone() else {
            return Err(sql_err(
                origin,
                at.line,
                at.column,
                "WATERMARK FOR is only allowed in CREATE TABLE (...)".into(),
            ));
        };
        // After the columns and a comma, or alone in the parentheses of a table whose columns
        // are fixed (nexmark, raw kafka): then the parentheses go with it.
        let before = i
            .checked_sub(1)
            .filter(|&c| matches!(tokens[c].token, Token::Comma | Token::LParen));
        let Some(comma) = before else {
            return Err(sql_err(origin, at.line, at.column, format!("table '{table_name}': WATERMARK FOR follows the column declarations, after a comma")));
        };
        let column = tokens.get(i + 2).and_then(|n| word_name(&n.token));
        let (Some(column), true) = (
            column,
            tokens.get(i + 3).is_some_and(|n| is_word(&n.token, "AS")),
        ) else {
            return Err(sql_err(origin, at.line, at.column, format!("table '{table_name}': expected WATERMARK FOR column AS column - INTERVAL '5' SECOND")));
        };
        let mut j = i + 4;
        let mut inner = 0i32;
        while j < tokens.len() {
            match tokens[j].token {
                Token::LParen => inner += 1,
                Token::RParen if inner == 0 => break,
                Token::RParen => inner -= 1,
                Token::Comma if inner == 0 => break,
                _ => {}
            }
            j += 1;
        }
        if j == i + 4 || j >= tokens.len() {
            return Err(sql_err(
                origin,
                at.line,
                at.column,
                format!("table '{table_name}': WATERMARK FOR {column} AS needs an expression"),
            ));
        }
        let start = offset(
            text,
            tokens[comma].span.start.line,
            tokens[comma].span.start.column,
        );
        let expr_start = offset(
            text,
            tokens[i + 4].span.start.line,
            tokens[i + 4].span.start.column,
        );
        let alone = tokens[comma].token == Token::LParen;
        if alone && tokens[j].token != Token::RParen {
            return Err(sql_err(origin, at.line, at.column, format!("table '{table_name}': WATERMARK FOR follows the column declarations, after a comma")));
        }
        let expr_end = offset(text, tokens[j].span.start.line, tokens[j].span.start.column);
        let expr_text = &text[expr_start..expr_end];
        // Alone, the closing parenthesis is blanked too (it is one byte).
        let end = if alone { expr_end + 1 } else { expr_end };
        let delay_ms = watermark_delay(&column, expr_text).map_err(|m| {
            let s = tokens[i + 4].span.start;
            sql_err(
                origin,
                s.line,
                s.column,
                format!("table '{table_name}': {m}"),
            )
        })?;
        // Blank the clause, keeping newlines so later locations stay right.
        out.replace_range(start..end, &blanked(&text[start..end]));
        decls.push(WatermarkDecl {
            table: table_name,
            column,
            delay_ms,
        });
        if alone {
            // The closing parenthesis is gone with the clause.
            depth -= 1;
            i = j + 1;
            continue;
        }
        i = j;
    }
    Ok((out, decls))
}

/// The window table functions.
const WINDOW_FUNCTIONS: [&str; 4] = ["TUMBLE", "HOP", "CUMULATE", "SESSION"];

/// Flink (and Arroyo) pass the window function's table as `TABLE name`, positionally or named:
/// `TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND)`,
/// `TUMBLE(DATA => TABLE bids, ...)`; a session window may name its keys,
/// `SESSION(TABLE bids PARTITION BY auction, ...)`. sqlparser accepts neither inside function
/// arguments, so the `TABLE` keyword is replaced by spaces and `PARTITION BY` by a comma and
/// spaces (every location stays right), leaving `TUMBLE(bids, ...)` and
/// `SESSION(bids, auction, ...)`, which [`rewrite`] reads.
fn blank_table_arguments(text: &str, tokens: &[TokenWithSpan], out: &mut String) {
    let mut blank = |from: &TokenWithSpan, to: &TokenWithSpan, with: char| {
        let start = offset(text, from.span.start.line, from.span.start.column);
        let end = offset(text, to.span.end.line, to.span.end.column);
        if end > start
            && end <= out.len()
            && out.is_char_boundary(start)
            && out.is_char_boundary(end)
        {
            // `with` (ASCII), then the rest blanked byte for byte.
            let filler: String = std::iter::once(with)
                .chain(blanked(&out[start..end]).chars().skip(1))
                .collect();
            out.replace_range(start..end, &filler);
        }
    };
    let keyword = |t: &Token, k: &str| matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(k));
    // The function each open parenthesis belongs to ("" for a plain one).
    let mut calls: Vec<String> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        match &t.token {
            Token::LParen => {
                let name = match i.checked_sub(1).map(|p| &tokens[p].token) {
                    Some(Token::Word(w)) => w.value.to_ascii_uppercase(),
                    _ => String::new(),
                };
                calls.push(name);
            }
            Token::RParen => {
                calls.pop();
            }
            _ => {}
        }
        let in_window_function = calls
            .last()
            .is_some_and(|c| WINDOW_FUNCTIONS.contains(&c.as_str()));
        if !in_window_function {
            continue;
        }
        let after = i.checked_sub(1).map(|p| &tokens[p].token);
        if keyword(&t.token, "TABLE")
            && matches!(after, Some(Token::LParen) | Some(Token::RArrow))
            && tokens
                .get(i + 1)
                .is_some_and(|n| word_name(&n.token).is_some())
        {
            blank(t, t, ' ');
        }
        if keyword(&t.token, "PARTITION")
            && tokens.get(i + 1).is_some_and(|n| keyword(&n.token, "BY"))
            && after.is_some_and(|a| word_name(a).is_some())
        {
            blank(t, &tokens[i + 1], ',');
        }
    }
}

fn watermark_delay(column: &str, expr_text: &str) -> std::result::Result<i64, String> {
    let dialect = GenericDialect {};
    let expr = Parser::new(&dialect)
        .try_with_sql(expr_text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| format!("cannot read the watermark expression: {e}"))?;
    let names = |e: &Expr| match e {
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case(column),
        _ => false,
    };
    match &expr {
        e if names(e) => Ok(0),
        Expr::BinaryOp { left, op, right }
            if names(left) && *op == datafusion::sql::sqlparser::ast::BinaryOperator::Minus =>
        {
            match right.as_ref() {
                Expr::Interval(interval) => interval_ms(interval),
                other => Err(format!(
                    "the watermark subtracts an INTERVAL from {column}, not `{other}`"
                )),
            }
        }
        other => Err(format!(
            "the watermark must be `{column}` or `{column} - INTERVAL '5' SECOND`, not `{other}`"
        )),
    }
}

/// Milliseconds of a fixed-length interval (`INTERVAL '4' SECOND`, `INTERVAL '1.5 minutes'`).
pub fn interval_ms(
    interval: &datafusion::sql::sqlparser::ast::Interval,
) -> std::result::Result<i64, String> {
    let text = match interval.value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.clone(),
            other => return Err(format!("unsupported interval value {other}")),
        },
        other => return Err(format!("unsupported interval value {other}")),
    };
    let (number, unit) = match &interval.leading_field {
        Some(field) => {
            let unit = match field {
                DateTimeField::Millisecond | DateTimeField::Milliseconds => "millisecond",
                DateTimeField::Second | DateTimeField::Seconds => "second",
                DateTimeField::Minute | DateTimeField::Minutes => "minute",
                DateTimeField::Hour | DateTimeField::Hours => "hour",
                DateTimeField::Day | DateTimeField::Days => "day",
                other => return Err(format!("intervals of {other} have no fixed length")),
            };
            (text.trim().to_string(), unit.to_string())
        }
        None => return duration_ms(&text),
    };
    amount_ms(&text, &number, &unit)
}

/// Milliseconds of a duration written as text, in the one duration grammar Sluice uses
/// everywhere (SQL options, interval strings and the command line's `--trigger`):
/// [`humantime`]'s — `'500ms'`, `'30s'`, `'5m'` (minutes), `'1h 30m'`, `'2 seconds'`,
/// `'1 day'` — plus a fraction before a single unit (`'1.5 hours'`). A bare number is seconds.
pub fn duration_ms(text: &str) -> std::result::Result<i64, String> {
    let spelled = spell_units(text);
    let trimmed = spelled.trim();
    if let Ok(n) = trimmed.parse::<f64>() {
        return amount_ms(text, &n.to_string(), "second");
    }
    if let Ok(d) = humantime::parse_duration(trimmed) {
        return i64::try_from(d.as_millis()).map_err(|_| format!("duration '{text}' is too long"));
    }
    // A fraction and one unit ('1.5 hours', '0.5m').
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() || unit.trim().is_empty() {
        return Err(format!(
            "'{text}' is not a duration: write a number and a unit, such as '500ms', '30s', '5m', '2h', '1 day' or '1.5 hours'"
        ));
    }
    amount_ms(text, number, unit.trim())
}

/// `text` with the unit names SQL users write that [`humantime`] does not know
/// (`millisecond(s)`, `microsecond(s)`) spelled as it does.
fn spell_units(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    lower
        .replace("milliseconds", "ms")
        .replace("millisecond", "ms")
        .replace("microseconds", "us")
        .replace("microsecond", "us")
}

/// Milliseconds of `number` (possibly fractional) of `unit` (any unit of [`humantime`]).
fn amount_ms(text: &str, number: &str, unit: &str) -> std::result::Result<i64, String> {
    let unit_ms = humantime::parse_duration(&format!("1{}", spell_units(unit)))
        .map(|d| d.as_secs_f64() * 1000.0)
        .map_err(|_| {
            format!(
                "'{unit}' in '{text}' is not a unit of time: use ms, s, m (minutes), h, d or their names (second, minute, hour, day)"
            )
        })?;
    let n: f64 = number
        .parse()
        .map_err(|_| format!("duration '{text}' is not a number of units"))?;
    let value = n * unit_ms;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("duration '{text}' must be zero or positive"));
    }
    Ok(value.round() as i64)
}

/// A window table function found in the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowDecl {
    /// `tumble`, `hop` or `session`.
    pub kind: &'static str,
    /// The table it windows.
    pub table: String,
    /// The event-time column.
    pub column: String,
    /// Window size (the gap of a session window) in milliseconds.
    pub size_ms: i64,
    /// Slide in milliseconds (= size for tumbling windows, the step of cumulative windows, 0
    /// for sessions).
    pub slide_ms: i64,
    /// A session window's keys from `PARTITION BY` (they must be grouped by too).
    pub keys: Vec<String>,
}

struct WindowRewriter {
    origin: String,
    found: Vec<WindowDecl>,
    error: Option<EngineError>,
}

impl VisitorMut for WindowRewriter {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let (name, args, alias) = match factor {
            TableFactor::TableFunction {
                expr: Expr::Function(f),
                alias,
            } => {
                let FunctionArguments::List(list) = &f.args else {
                    return ControlFlow::Continue(());
                };
                let args: Vec<FunctionArg> = list.args.clone();
                (f.name.to_string(), args, alias.clone())
            }
            TableFactor::Table {
                name,
                args: Some(args),
                alias,
                ..
            } => (name.to_string(), args.args.clone(), alias.clone()),
            _ => return ControlFlow::Continue(()),
        };
        let kind = match name.to_ascii_lowercase().as_str() {
            "tumble" => "tumble",
            "hop" => "hop",
            "cumulate" => "cumulate",
            "session" => "session",
            _ => return ControlFlow::Continue(()),
        };
        match rewrite(kind, &args, alias.as_ref().map(|a| a.name.to_string())) {
            Ok((derived, decl)) => {
                *factor = derived;
                self.found.push(decl);
                ControlFlow::Continue(())
            }
            Err(message) => {
                self.error = Some(EngineError::Sql {
                    location: format!("{}: ", self.origin),
                    message,
                });
                ControlFlow::Break(())
            }
        }
    }
}

fn arg_expr(arg: &FunctionArg) -> Option<&Expr> {
    match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
        _ => None,
    }
}

/// Flink's parameter names of each window function, in positional order.
fn parameter_names(kind: &str) -> &'static [&'static str] {
    match kind {
        "tumble" => &["DATA", "TIMECOL", "SIZE"],
        "hop" => &["DATA", "TIMECOL", "SLIDE", "SIZE"],
        "cumulate" => &["DATA", "TIMECOL", "STEP", "SIZE"],
        _ => &["DATA", "TIMECOL", "GAP"],
    }
}

/// The arguments in positional order, named ones (`SIZE => INTERVAL ...`) put in their place;
/// and a session's keys (what followed its table: `PARTITION BY k` or `PARTITION BY (k1, k2)`).
fn positional(
    kind: &str,
    args: &[FunctionArg],
    usage: &str,
) -> std::result::Result<(Vec<FunctionArg>, Vec<String>), String> {
    let names = parameter_names(kind);
    let named = args.iter().any(|a| matches!(a, FunctionArg::Named { .. }));
    let mut keys = Vec::new();
    let key_names = |e: &Expr, keys: &mut Vec<String>| -> std::result::Result<(), String> {
        match e {
            Expr::Identifier(i) => keys.push(i.value.to_ascii_lowercase()),
            Expr::Nested(inner) => match inner.as_ref() {
                Expr::Identifier(i) => keys.push(i.value.to_ascii_lowercase()),
                _ => return Err(format!("PARTITION BY names key columns: {usage}")),
            },
            Expr::Tuple(items) => {
                for item in items {
                    match item {
                        Expr::Identifier(i) => keys.push(i.value.to_ascii_lowercase()),
                        _ => return Err(format!("PARTITION BY names key columns: {usage}")),
                    }
                }
            }
            _ => return Err(format!("PARTITION BY names key columns: {usage}")),
        }
        Ok(())
    };
    if !named {
        let mut args = args.to_vec();
        if kind == "session" && args.len() == names.len() + 1 {
            // SESSION(bids, key, ...): the keys that followed PARTITION BY.
            let key = args.remove(1);
            match arg_expr(&key) {
                Some(e) => key_names(e, &mut keys)?,
                None => return Err(format!("PARTITION BY names key columns: {usage}")),
            }
        }
        return Ok((args, keys));
    }
    let mut slots: Vec<Option<FunctionArg>> = vec![None; names.len()];
    for arg in args {
        match arg {
            FunctionArg::Named { name, arg, .. } => {
                let upper = name.value.to_ascii_uppercase();
                let Some(at) = names.iter().position(|n| *n == upper) else {
                    return Err(format!(
                        "{} has no parameter {}: its parameters are {} ({usage})",
                        kind.to_uppercase(),
                        name.value,
                        names.join(", ")
                    ));
                };
                if slots[at].is_some() {
                    return Err(format!("{} is given twice: {usage}", name.value));
                }
                slots[at] = Some(FunctionArg::Unnamed(arg.clone()));
            }
            // Only a session's keys stand unnamed among named arguments.
            other => match arg_expr(other) {
                Some(e) if kind == "session" => key_names(e, &mut keys)?,
                _ => {
                    return Err(format!(
                        "name every argument or none: {usage} or {}",
                        names
                            .iter()
                            .map(|n| format!("{n} => ..."))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            },
        }
    }
    let mut out = Vec::new();
    for (name, slot) in names.iter().zip(slots) {
        match slot {
            Some(arg) => out.push(arg),
            None => return Err(format!("{} needs {name}: {usage}", kind.to_uppercase())),
        }
    }
    Ok((out, keys))
}

fn rewrite(
    kind: &'static str,
    args: &[FunctionArg],
    alias: Option<String>,
) -> std::result::Result<(TableFactor, WindowDecl), String> {
    let usage = match kind {
        "tumble" => "TUMBLE(TABLE t, DESCRIPTOR(time_column), INTERVAL '10' SECOND)",
        "session" => "SESSION(TABLE t [PARTITION BY key], DESCRIPTOR(time_column), INTERVAL '10' SECOND) (the gap; sessions are kept per the other GROUP BY columns)",
        "cumulate" => "CUMULATE(TABLE t, DESCRIPTOR(time_column), INTERVAL '2' SECOND, INTERVAL '10' SECOND) (step, then size)",
        _ => "HOP(TABLE t, DESCRIPTOR(time_column), INTERVAL '2' SECOND, INTERVAL '10' SECOND) (slide, then size)",
    };
    let (args, keys) = positional(kind, args, usage)?;
    let args = &args[..];
    let want = parameter_names(kind).len();
    if args.len() != want {
        return Err(format!(
            "{} takes {want} arguments: {usage}",
            kind.to_uppercase()
        ));
    }
    let table = match arg_expr(&args[0]) {
        Some(Expr::Identifier(i)) => i.to_string(),
        Some(Expr::CompoundIdentifier(parts)) => parts
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("."),
        _ => {
            return Err(format!(
                "the first argument of {} names a table: {usage}",
                kind.to_uppercase()
            ))
        }
    };
    let column = match arg_expr(&args[1]) {
        Some(Expr::Function(f)) if f.name.to_string().eq_ignore_ascii_case("descriptor") => {
            match &f.args {
                FunctionArguments::List(l) if l.args.len() == 1 => match arg_expr(&l.args[0]) {
                    Some(Expr::Identifier(i)) => i.to_string(),
                    _ => return Err(format!("DESCRIPTOR names one column: {usage}")),
                },
                _ => return Err(format!("DESCRIPTOR names one column: {usage}")),
            }
        }
        _ => {
            return Err(format!(
                "the second argument of {} is DESCRIPTOR(time_column): {usage}",
                kind.to_uppercase()
            ))
        }
    };
    let interval = |i: usize| -> std::result::Result<(String, i64), String> {
        match arg_expr(&args[i]) {
            Some(Expr::Interval(iv)) => {
                let ms = interval_ms(iv)?;
                if ms <= 0 {
                    return Err(format!(
                        "{} intervals must be positive",
                        kind.to_uppercase()
                    ));
                }
                Ok((iv.to_string(), ms))
            }
            _ => Err(format!(
                "{} takes INTERVAL arguments: {usage}",
                kind.to_uppercase()
            )),
        }
    };
    let origin = "TIMESTAMP '1970-01-01T00:00:00'";
    let (sql, size_ms, slide_ms) = if kind == "session" {
        // Each row opens the proto-session [t, t + gap); the aggregation merges overlapping
        // ones per key (see operator::session).
        let (gap, gap_ms) = interval(2)?;
        (
            format!(
                "SELECT *, {column} AS window_start, {column} + {gap} AS window_end FROM {table}"
            ),
            gap_ms,
            0,
        )
    } else if kind == "cumulate" {
        // Windows share the start of the `size` window holding the row and end at each step
        // from the row's own step to the full size: [s, s + step), [s, s + 2 step), ...
        let (step, step_ms) = interval(2)?;
        let (size, size_ms) = interval(3)?;
        if size_ms % step_ms != 0 {
            return Err(format!(
                "CUMULATE: the size ({size}) must be a multiple of the step ({step})"
            ));
        }
        let start = format!("date_bin({size}, {column}, {origin})");
        let first_end = format!("date_bin({step}, {column}, {origin}) + {step}");
        (
            format!(
                "SELECT *, {start} AS window_start, unnest(range({first_end}, {start} + {size} + {step}, {step})) AS window_end FROM {table}"
            ),
            size_ms,
            step_ms,
        )
    } else if kind == "tumble" {
        let (size, size_ms) = interval(2)?;
        let start = format!("date_bin({size}, {column}, {origin})");
        (
            format!(
                "SELECT *, {start} AS window_start, {start} + {size} AS window_end FROM {table}"
            ),
            size_ms,
            size_ms,
        )
    } else {
        let (slide, slide_ms) = interval(2)?;
        let (size, size_ms) = interval(3)?;
        if size_ms % slide_ms != 0 {
            return Err(format!(
                "HOP: the size ({size}) must be a multiple of the slide ({slide})"
            ));
        }
        let last = format!("date_bin({slide}, {column}, {origin})");
        (
            format!(
                "SELECT *, window_start + {size} AS window_end FROM (SELECT *, unnest(range({last} - {size} + {slide}, {last} + {slide}, {slide})) AS window_start FROM {table})"
            ),
            size_ms,
            slide_ms,
        )
    };
    let alias = alias.unwrap_or_else(|| table.rsplit('.').next().unwrap_or(&table).to_string());
    let wrapped = format!("SELECT * FROM ({sql}) AS {alias}");
    let dialect = GenericDialect {};
    let query = Parser::new(&dialect)
        .try_with_sql(&wrapped)
        .and_then(|mut p| p.parse_query())
        .map_err(|e| format!("{}: {e}", kind.to_uppercase()))?;
    let SetExpr::Select(select) = *query.body else {
        return Err("internal: window rewrite is not a SELECT".into());
    };
    let factor = select
        .from
        .into_iter()
        .next()
        .map(|f| f.relation)
        .ok_or("internal: window rewrite has no FROM")?;
    Ok((
        factor,
        WindowDecl {
            kind,
            table: table.to_ascii_lowercase(),
            column: column.to_ascii_lowercase(),
            size_ms,
            slide_ms,
            keys,
        },
    ))
}

/// Rewrites window table functions in `query` into derived tables; returns what it found.
pub fn rewrite_windows(origin: &str, query: &mut Query) -> Result<Vec<WindowDecl>> {
    let mut rewriter = WindowRewriter {
        origin: origin.to_string(),
        found: Vec::new(),
        error: None,
    };
    let _ = query.visit(&mut rewriter);
    match rewriter.error {
        Some(e) => Err(e),
        None => Ok(rewriter.found),
    }
}

#[cfg(test)]
mod tests;
