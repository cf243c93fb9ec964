//! Flink's statement-set brackets around several `INSERT`s:
//!
//! ```sql
//! EXECUTE STATEMENT SET BEGIN
//!   INSERT INTO archive SELECT * FROM bids;
//!   INSERT INTO counts SELECT ... FROM TUMBLE(TABLE bids, ...) GROUP BY ...;
//! END;
//! ```
//!
//! and the SQL client's `BEGIN STATEMENT SET; ... END;`. sqlparser knows neither, and a job's
//! `INSERT`s form one statement set anyway, so the brackets are replaced by spaces before
//! parsing (every location stays right); the job parser then checks what is left.

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use super::streaming_sql::{blanked, is_word, offset, sql_err};
use crate::error::Result;

/// Blanks `EXECUTE STATEMENT SET BEGIN` / `BEGIN STATEMENT SET;` and the `END` closing them in
/// `out` (a copy of `text`); `tokens` are `text`'s tokens without whitespace.
pub(super) fn blank_brackets(
    origin: &str,
    text: &str,
    tokens: &[TokenWithSpan],
    out: &mut String,
) -> Result<()> {
    let words = |at: usize, want: &[&str]| {
        want.iter()
            .enumerate()
            .all(|(k, w)| tokens.get(at + k).is_some_and(|t| is_word(&t.token, w)))
    };
    // A statement starts the text or follows a semicolon.
    let statement_start = |at: usize| at == 0 || matches!(tokens[at - 1].token, Token::SemiColon);
    let mut open: Option<usize> = None;
    let mut i = 0;
    while i < tokens.len() {
        let opening = if !statement_start(i) {
            None
        } else if words(i, &["EXECUTE", "STATEMENT", "SET", "BEGIN"]) {
            Some(4)
        } else if words(i, &["BEGIN", "STATEMENT", "SET"])
            && tokens
                .get(i + 3)
                .is_some_and(|t| t.token == Token::SemiColon)
        {
            // The semicolon goes too: what follows is the first statement.
            Some(4)
        } else {
            None
        };
        if let Some(len) = opening {
            let at = tokens[i].span.start;
            if let Some(first) = open {
                let s = tokens[first].span.start;
                return Err(sql_err(
                    origin,
                    at.line,
                    at.column,
                    format!(
                        "a statement set cannot hold another (the one at {}:{} has no END yet)",
                        s.line, s.column
                    ),
                ));
            }
            blank(text, out, &tokens[i], &tokens[i + len - 1]);
            open = Some(i);
            i += len;
            continue;
        }
        let closing = open.is_some()
            && statement_start(i)
            && is_word(&tokens[i].token, "END")
            && tokens
                .get(i + 1)
                .is_none_or(|t| matches!(t.token, Token::SemiColon | Token::EOF));
        if closing {
            blank(text, out, &tokens[i], &tokens[i]);
            open = None;
        }
        i += 1;
    }
    if let Some(first) = open {
        let at = tokens[first].span.start;
        return Err(sql_err(
            origin,
            at.line,
            at.column,
            "this statement set has no END; close it with END; after its last INSERT".into(),
        ));
    }
    Ok(())
}

/// Replaces the text from `from`'s start to `to`'s end by spaces, keeping newlines.
fn blank(text: &str, out: &mut String, from: &TokenWithSpan, to: &TokenWithSpan) {
    let start = offset(text, from.span.start.line, from.span.start.column);
    let end = offset(text, to.span.end.line, to.span.end.column);
    if start < end && end <= out.len() && out.is_char_boundary(start) && out.is_char_boundary(end) {
        let blanked = blanked(&out[start..end]);
        out.replace_range(start..end, &blanked);
    }
}
