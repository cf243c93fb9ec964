//! The console sink: rows printed by the driver, never more than a fixed number held.
//!
//! The driver streams result batches into a [`ConsolePrinter`]; it keeps at most `limit` rows
//! and counts the rest without holding them, so no query can make the driver hold an unbounded
//! result. [`ConsolePrinter::render`] says how many rows were left out.

use arrow::array::RecordBatch;

/// Collects up to `limit` rows for printing and counts the rest.
#[derive(Debug)]
pub struct ConsolePrinter {
    limit: usize,
    held: Vec<RecordBatch>,
    held_rows: usize,
    total_rows: u64,
}

impl ConsolePrinter {
    /// A printer that shows at most `limit` rows.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            held: Vec::new(),
            held_rows: 0,
            total_rows: 0,
        }
    }

    /// Whether the printer holds all the rows it will show (more input is only counted).
    pub fn is_full(&self) -> bool {
        self.held_rows >= self.limit
    }

    /// Offers a batch: rows beyond the limit are counted and dropped.
    pub fn push(&mut self, batch: &RecordBatch) {
        self.total_rows += batch.num_rows() as u64;
        let room = self.limit - self.held_rows.min(self.limit);
        if room > 0 && batch.num_rows() > 0 {
            let take = room.min(batch.num_rows());
            self.held.push(batch.slice(0, take));
            self.held_rows += take;
        }
    }

    /// Counts rows that were never fetched (known only from task reports).
    pub fn count_unfetched(&mut self, rows: u64) {
        self.total_rows += rows;
    }

    /// The rows shown so far.
    pub fn shown(&self) -> usize {
        self.held_rows
    }

    /// All rows counted.
    pub fn total(&self) -> u64 {
        self.total_rows
    }

    /// The table to print, followed by a line saying how many rows were left out.
    pub fn render(&self) -> Result<String, arrow::error::ArrowError> {
        let mut out = arrow::util::pretty::pretty_format_batches(&self.held)?.to_string();
        let left_out = self.total_rows - self.held_rows as u64;
        if left_out > 0 {
            out.push_str(&format!(
                "\n{} of {} rows shown; {left_out} rows left out (raise --max-result-rows to see more)",
                self.held_rows, self.total_rows
            ));
        } else {
            out.push_str(&format!("\n{} rows", self.total_rows));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use std::sync::Arc;

    #[test]
    fn holds_at_most_the_limit_and_reports_the_rest() {
        let batch = RecordBatch::try_from_iter([(
            "x",
            Arc::new(Int64Array::from_iter_values(0..100)) as _,
        )])
        .unwrap();
        let mut p = ConsolePrinter::new(10);
        p.push(&batch);
        p.push(&batch);
        assert!(p.is_full());
        assert_eq!(p.shown(), 10);
        let text = p.render().unwrap();
        assert!(
            text.contains("10 of 200 rows shown; 190 rows left out"),
            "{text}"
        );
    }
}
