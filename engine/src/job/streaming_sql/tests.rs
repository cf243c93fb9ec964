#[test]
fn one_duration_grammar_minutes_are_m_and_milliseconds_ms() {
    use super::duration_ms;
    assert_eq!(duration_ms("5 m"), Ok(300_000));
    assert_eq!(duration_ms("5m"), Ok(300_000));
    assert_eq!(duration_ms("1h"), Ok(3_600_000));
    assert_eq!(duration_ms("1h 30m"), Ok(5_400_000));
    assert_eq!(duration_ms("500ms"), Ok(500));
    assert_eq!(duration_ms("500 ms"), Ok(500));
    assert_eq!(duration_ms("250 milliseconds"), Ok(250));
    assert_eq!(duration_ms("2 Seconds"), Ok(2_000));
    assert_eq!(duration_ms("2 seconds"), Ok(2_000));
    assert_eq!(duration_ms("1 day"), Ok(86_400_000));
    assert_eq!(duration_ms("1.5 hours"), Ok(5_400_000));
    assert_eq!(duration_ms("4"), Ok(4_000));
    let err = duration_ms("5 fortnights").unwrap_err();
    assert!(err.contains("not a unit of time"), "{err}");
    assert!(duration_ms("soon").is_err());
}

use super::*;

#[test]
fn watermark_clauses_are_lifted_and_positions_kept() {
    let sql = "CREATE TABLE bids (auction BIGINT, date_time TIMESTAMP,\n  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)\n  WITH (connector = 'kafka');\nSELECT x FROM bids;";
    let (text, decls) = extract_watermarks("job.sql", sql).unwrap();
    assert_eq!(
        decls,
        vec![WatermarkDecl {
            table: "bids".into(),
            column: "date_time".into(),
            delay_ms: 4000
        }]
    );
    assert!(!text.to_ascii_uppercase().contains("WATERMARK"));
    assert_eq!(text.lines().count(), sql.lines().count());
    assert_eq!(text.len(), sql.len());
    assert!(text.contains("date_time TIMESTAMP"));
    assert!(text.contains(")\n  WITH"));
}

#[test]
fn a_watermark_alone_takes_its_parentheses_along() {
    let sql = "CREATE TABLE bid (WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)\n  WITH (connector = 'nexmark', kind = 'bid');\nSELECT 1;";
    let (text, decls) = extract_watermarks("job.sql", sql).unwrap();
    assert_eq!(decls[0].delay_ms, 1000);
    assert!(text.starts_with("CREATE TABLE bid "), "{text}");
    assert!(!text.contains('(') || text.contains("WITH ("), "{text}");
    assert_eq!(text.matches('(').count(), 1, "{text}");
    assert_eq!(text.len(), sql.len());
}

#[test]
fn blanked_clauses_with_multi_byte_characters_keep_the_text_length() {
    // Found by fuzzing: a comment with a multi-byte character inside a blanked clause
    // shortened the text, and the next clause's offsets (here its closing parenthesis, the
    // text's last byte) fell outside it — a panic instead of a job.
    let sql =
        "CREATE TABLE a (ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND /* é */)\n\
               CREATE TABLE b (WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)";
    let (text, decls) = extract_watermarks("job.sql", sql).unwrap();
    assert_eq!(text.len(), sql.len());
    assert_eq!(
        decls.iter().map(|d| d.delay_ms).collect::<Vec<_>>(),
        vec![1000, 2000]
    );
    // `TABLE` arguments and statement-set brackets are blanked byte for byte too.
    let sql = "SELECT * FROM TUMBLE(TABLE/* ü */bids, DESCRIPTOR(ts), INTERVAL '1' SECOND)";
    assert_eq!(
        extract_watermarks("job.sql", sql).unwrap().0.len(),
        sql.len()
    );
    assert_eq!(super::blanked("a\u{e9}\nb"), "   \n ");
}

#[test]
fn watermark_forms_and_errors() {
    let ok = |e: &str| watermark_delay("ts", e);
    assert_eq!(ok("ts"), Ok(0));
    assert_eq!(ok("ts - INTERVAL '1.5' MINUTE"), Ok(90_000));
    assert_eq!(ok("ts - INTERVAL '250 milliseconds'"), Ok(250));
    assert!(ok("other - INTERVAL '1' SECOND")
        .unwrap_err()
        .contains("ts"));
    assert!(ok("ts - INTERVAL '1' MONTH")
        .unwrap_err()
        .contains("fixed length"));
    let err = extract_watermarks(
        "j.sql",
        "CREATE TABLE t (a INT,\n WATERMARK FOR a AS a + 1) WITH (x = 'y');",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("j.sql:2:21"), "{err}");
    assert!(err.contains("table 't'"), "{err}");
}

#[test]
fn window_functions_become_derived_tables() {
    let dialect = GenericDialect {};
    let mut q = Parser::new(&dialect)
        .try_with_sql("SELECT window_start, count(*) FROM TABLE(HOP(bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) GROUP BY window_start")
        .unwrap()
        .parse_query()
        .unwrap();
    let found = rewrite_windows("q", &mut q).unwrap();
    assert_eq!(found[0].size_ms, 10_000);
    assert_eq!(found[0].slide_ms, 2_000);
    let text = q.to_string();
    assert!(text.contains("unnest(range("), "{text}");
    assert!(text.contains("AS bids"), "{text}");
    let mut bad = Parser::new(&dialect)
        .try_with_sql("SELECT 1 FROM TUMBLE(bids, date_time, INTERVAL '2' SECOND)")
        .unwrap()
        .parse_query()
        .unwrap();
    let err = rewrite_windows("q", &mut bad).unwrap_err().to_string();
    assert!(err.contains("DESCRIPTOR"), "{err}");
}

/// Flink's `TUMBLE(TABLE t, ...)` form is the same query as Sluice's `TUMBLE(t, ...)`.
#[test]
fn flink_table_arguments_are_the_same_windows() {
    let windows = |sql: &str| {
        let (text, _) = extract_watermarks("job.sql", sql).unwrap();
        let mut q = Parser::new(&GenericDialect {})
            .try_with_sql(&text)
            .unwrap()
            .parse_query()
            .unwrap();
        let found = rewrite_windows("job.sql", &mut q).unwrap();
        (q.to_string(), format!("{found:?}"))
    };
    for (flink, ours) in [
        (
            "SELECT count(*) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))",
            "SELECT count(*) FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))",
        ),
        (
            "SELECT count(*) FROM TABLE(\n  hop(table Bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))",
            "SELECT count(*) FROM TABLE(\n  hop(Bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))",
        ),
        (
            "SELECT count(*) FROM TABLE(SESSION(TABLE bids, DESCRIPTOR(date_time), INTERVAL '5' SECOND))",
            "SELECT count(*) FROM TABLE(SESSION(bids, DESCRIPTOR(date_time), INTERVAL '5' SECOND))",
        ),
    ] {
        assert_eq!(windows(flink), windows(ours), "{flink}");
    }
    // Named arguments (Flink's DATA / TIMECOL / SIZE / SLIDE / GAP), in any order, and a
    // session's PARTITION BY keys.
    for (flink, ours) in [
        (
            "SELECT count(*) FROM TABLE(TUMBLE(DATA => TABLE bids, TIMECOL => DESCRIPTOR(date_time), SIZE => INTERVAL '10' SECOND))",
            "SELECT count(*) FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))",
        ),
        (
            "SELECT count(*) FROM TABLE(HOP(SIZE => INTERVAL '10' SECOND, SLIDE => INTERVAL '2' SECOND, timecol => DESCRIPTOR(date_time), data => TABLE bids))",
            "SELECT count(*) FROM TABLE(HOP(bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))",
        ),
        (
            "SELECT count(*) FROM TABLE(CUMULATE(DATA => TABLE bids, TIMECOL => DESCRIPTOR(date_time), STEP => INTERVAL '2' SECOND, SIZE => INTERVAL '10' SECOND))",
            "SELECT count(*) FROM TABLE(CUMULATE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))",
        ),
        (
            "SELECT count(*) FROM TABLE(SESSION(TABLE bids PARTITION BY auction, DESCRIPTOR(date_time), INTERVAL '5' SECOND))",
            "SELECT count(*) FROM TABLE(SESSION(DATA => TABLE bids PARTITION BY (auction), TIMECOL => DESCRIPTOR(date_time), GAP => INTERVAL '5' SECOND))",
        ),
    ] {
        assert_eq!(windows(flink), windows(ours), "{flink}");
    }
    let (_, found) = windows(
        "SELECT 1 FROM TABLE(SESSION(TABLE bids PARTITION BY (auction, bidder), DESCRIPTOR(date_time), INTERVAL '5' SECOND))",
    );
    assert!(found.contains(r#"keys: ["auction", "bidder"]"#), "{found}");
    // The same session without keys is another query (sessions per GROUP BY columns).
    assert_ne!(
        windows("SELECT count(*) FROM TABLE(SESSION(TABLE bids PARTITION BY auction, DESCRIPTOR(date_time), INTERVAL '5' SECOND))").1,
        windows("SELECT count(*) FROM TABLE(SESSION(TABLE bids, DESCRIPTOR(date_time), INTERVAL '5' SECOND))").1,
    );
    // Wrong names and mixtures say what is expected.
    let error = |sql: &str| {
        let (text, _) = extract_watermarks("job.sql", sql).unwrap();
        let mut q = Parser::new(&GenericDialect {})
            .try_with_sql(&text)
            .unwrap()
            .parse_query()
            .unwrap();
        rewrite_windows("job.sql", &mut q).unwrap_err().to_string()
    };
    let err = error("SELECT 1 FROM TABLE(TUMBLE(DATA => TABLE bids, TIMECOL => DESCRIPTOR(date_time), WIDTH => INTERVAL '1' SECOND))");
    assert!(
        err.contains("no parameter WIDTH") && err.contains("DATA, TIMECOL, SIZE"),
        "{err}"
    );
    let err = error("SELECT 1 FROM TABLE(HOP(DATA => TABLE bids, TIMECOL => DESCRIPTOR(date_time), SIZE => INTERVAL '1' SECOND))");
    assert!(err.contains("HOP needs SLIDE"), "{err}");
    let err = error("SELECT 1 FROM TABLE(CUMULATE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '3' SECOND, INTERVAL '10' SECOND))");
    assert!(err.contains("multiple of the step"), "{err}");
    // A column or table merely named like the keyword is left alone.
    let (text, _) = extract_watermarks("job.sql", "SELECT tumble(x) FROM \"table\"").unwrap();
    assert_eq!(text, "SELECT tumble(x) FROM \"table\"");
}
