//! End-to-end: the real `sluice` binary with 2 and 3 executor processes runs group-by, join,
//! filter, partitioned-output and Nexmark q5-shaped jobs; the Parquet it writes, read back with the `parquet`
//! crate, equals DataFusion's single-process answer on the same files.

mod common;

use common::*;
use sluice::table::{all_files, parquet_files, read_rows};

fn run_job(dir: &std::path::Path, name: &str, body: &str, executors: &str) -> String {
    let job = dir.join(format!("{name}.sql"));
    std::fs::write(&job, format!("{SOURCES}\n{body}")).unwrap();
    let out = sluice(
        dir,
        &["run", job.to_str().unwrap(), "--executors", executors],
    );
    ok(&out);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn group_by_join_filter_and_partitioned_output_match_datafusion_on_2_and_3_executors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);

    let group_by = reference(
        d,
        "SELECT auction, count(*) AS n, max(price) AS top, sum(price) AS total, channel FROM bids GROUP BY channel, auction",
    );
    let join = reference(
        d,
        "SELECT r.region, r.tier, count(*) AS n, sum(b.price) AS total FROM bids b JOIN bidders r ON b.bidder = r.bidder GROUP BY r.region, r.tier",
    );
    let filter = reference(d, "SELECT auction, price * 2 AS double_price, channel FROM bids WHERE price > 9000 AND channel <> 'web'");
    let json = reference(d, "SELECT action, count(*) AS n, count(DISTINCT bidder) AS bidders FROM events WHERE amount > 100 GROUP BY action");
    assert!(group_by.len() > 1000 && join.len() == 15 && filter.len() > 100 && json.len() == 3);

    for executors in ["2", "3"] {
        let out = |name: &str| d.join(format!("out-{executors}/{name}"));
        run_job(
            d,
            "group_by",
            &format!(
                "CREATE TABLE totals WITH (connector = 'parquet', path = '{}', partition_by = 'channel');
                 INSERT INTO totals SELECT channel, auction, count(*) AS n, max(price) AS top, sum(price) AS total FROM bids GROUP BY channel, auction;",
                out("totals").display()
            ),
            executors,
        );
        assert_eq!(
            read_rows(&out("totals")),
            group_by,
            "group-by on {executors} executors"
        );
        // Hive-style directories, one per channel, and nothing but published Parquet files.
        let dirs: std::collections::BTreeSet<String> = parquet_files(&out("totals"))
            .iter()
            .map(|f| {
                f.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(dirs.len(), 4, "{dirs:?}");
        assert!(dirs.iter().all(|d| d.starts_with("channel=")));
        assert_eq!(
            all_files(&out("totals")),
            parquet_files(&out("totals")),
            "no staging or stray files"
        );

        run_job(
            d,
            "join",
            &format!(
                "CREATE TABLE by_region WITH (connector = 'parquet', path = '{}');
                 INSERT INTO by_region SELECT r.region, r.tier, count(*) AS n, sum(b.price) AS total
                 FROM bids b JOIN bidders r ON b.bidder = r.bidder GROUP BY r.region, r.tier;",
                out("by_region").display()
            ),
            executors,
        );
        assert_eq!(
            read_rows(&out("by_region")),
            join,
            "join on {executors} executors"
        );

        run_job(
            d,
            "filter",
            &format!(
                "CREATE TABLE expensive WITH (connector = 'parquet', path = '{}');
                 INSERT INTO expensive SELECT auction, price * 2 AS double_price, channel FROM bids WHERE price > 9000 AND channel <> 'web';",
                out("expensive").display()
            ),
            executors,
        );
        assert_eq!(
            read_rows(&out("expensive")),
            filter,
            "filter on {executors} executors"
        );

        run_job(
            d,
            "json",
            &format!(
                "CREATE TABLE actions WITH (connector = 'parquet', path = '{}');
                 INSERT INTO actions SELECT action, count(*) AS n, count(DISTINCT bidder) AS bidders FROM events WHERE amount > 100 GROUP BY action;",
                out("actions").display()
            ),
            executors,
        );
        assert_eq!(
            read_rows(&out("actions")),
            json,
            "JSON source on {executors} executors"
        );
    }
}

/// Nexmark q5's shape: a sub-plan (bids per auction and hopping window) used twice, which
/// Sluice computes once (`plan/stages.rs`); the answer equals DataFusion's over the same files,
/// with the windows spelled out independently (each bid in the five windows starting at its
/// 2 s pane and the four before it).
#[test]
fn a_query_using_one_sub_plan_twice_matches_datafusion() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);
    let windows = (0..5)
        .map(|k| {
            format!(
                "SELECT auction, date_bin(INTERVAL '2' SECOND, date_time) - INTERVAL '{}' SECOND AS s FROM bids",
                2 * k
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let want = reference(
        d,
        &format!(
            "WITH c AS (SELECT auction, count(*) AS num, s FROM ({windows}) GROUP BY auction, s) \
             SELECT c.auction, c.num, c.s FROM c JOIN (SELECT max(num) AS maxn, s FROM c GROUP BY s) m \
             ON c.s = m.s AND c.num >= m.maxn"
        ),
    );
    assert!(want.len() > 60, "a row per window at least: {}", want.len());
    run_job(
        d,
        "q5",
        &format!(
            "CREATE TABLE hot WITH (connector = 'parquet', path = '{}');
             INSERT INTO hot SELECT a.auction, a.num, a.s FROM (
               SELECT auction, count(*) AS num, window_start AS s, window_end AS e
               FROM TABLE(HOP(bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
               GROUP BY auction, window_start, window_end) a
             JOIN (
               SELECT max(c.num) AS maxn, c.s, c.e FROM (
                 SELECT count(*) AS num, window_start AS s, window_end AS e
                 FROM TABLE(HOP(bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
                 GROUP BY auction, window_start, window_end) c
               GROUP BY c.s, c.e) m
             ON a.s = m.s AND a.e = m.e AND a.num >= m.maxn;",
            d.join("out-q5").display()
        ),
        "2",
    );
    assert_eq!(read_rows(&d.join("out-q5")), want);
}

#[test]
fn rerunning_a_job_on_its_checkpoint_does_not_duplicate_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);
    let job = d.join("job.sql");
    std::fs::write(
        &job,
        format!(
            "{SOURCES}
             CREATE TABLE totals WITH (connector = 'parquet', path = 'out/totals', partition_by = 'channel');
             INSERT INTO totals SELECT channel, auction, count(*) AS n FROM bids GROUP BY channel, auction;"
        ),
    )
    .unwrap();
    let args = ["run", "job.sql", "--checkpoint", "ckpt"];
    ok(&sluice(d, &args));
    let first_files = parquet_files(&d.join("out/totals"));
    let first_rows = read_rows(&d.join("out/totals"));
    assert!(!first_rows.is_empty());
    // The hive-partitioned output reads back through Sluice with `channel` from the paths.
    let stdout = ok(&sluice(
        d,
        &[
            "run",
            "-e",
            "SELECT channel, sum(n) AS n FROM 'out/totals/' GROUP BY channel ORDER BY channel",
        ],
    ));
    for row in reference(d, "SELECT channel, count(*) FROM bids GROUP BY channel") {
        assert!(
            stdout.contains(&format!("| {:<7} | {}", row[0], row[1])),
            "{row:?} not in\n{stdout}"
        );
    }
    // The checkpoint records what epoch 0 read, before it ran, and its commit.
    assert!(d.join("ckpt/offsets/0").exists() && d.join("ckpt/commits/0").exists());

    let again = sluice(d, &args);
    ok(&again);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already committed"));
    assert_eq!(parquet_files(&d.join("out/totals")), first_files);
    assert_eq!(read_rows(&d.join("out/totals")), first_rows);

    // A changed query refuses the old checkpoint, touching nothing.
    std::fs::write(&job, format!("{SOURCES} CREATE TABLE totals WITH (connector = 'parquet', path = 'out/totals'); INSERT INTO totals SELECT channel FROM bids;")).unwrap();
    let err = fails(&sluice(d, &args));
    assert!(err.contains("different query"), "{err}");
    assert_eq!(read_rows(&d.join("out/totals")), first_rows);
}

#[test]
fn an_interrupted_publish_is_completed_on_restart_without_running_again() {
    // Simulate a driver that died after recording its sink commit but before commits/0:
    // run once, then delete commits/0 and move one published file back to its staged path.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);
    std::fs::write(
        d.join("job.sql"),
        format!("{SOURCES} CREATE TABLE t WITH (connector = 'parquet', path = 'out/t'); INSERT INTO t SELECT auction, count(*) AS n FROM bids GROUP BY auction;"),
    )
    .unwrap();
    ok(&sluice(d, &["run", "job.sql", "--checkpoint", "ckpt"]));
    let rows = read_rows(&d.join("out/t"));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("ckpt/sinks/t/0")).unwrap()).unwrap();
    let first = &record["files"][0];
    let staged = std::path::PathBuf::from(first["staged_path"].as_str().unwrap());
    assert!(
        staged.is_absolute(),
        "sink records hold absolute paths: {staged:?}"
    );
    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
    std::fs::rename(
        d.join("out/t").join(first["final_path"].as_str().unwrap()),
        &staged,
    )
    .unwrap();
    std::fs::remove_file(d.join("ckpt/commits/0")).unwrap();
    assert_ne!(read_rows(&d.join("out/t")), rows);

    let out = sluice(d, &["run", "job.sql", "--checkpoint", "ckpt"]);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("completed the recorded commit"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_rows(&d.join("out/t")), rows);
    assert!(d.join("ckpt/commits/0").exists());
}

#[test]
fn console_queries_print_at_most_the_row_limit_and_say_what_was_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);
    let out = sluice(d, &["run", "-e", "SELECT channel, count(*) AS n FROM 'data/bids/*.parquet' GROUP BY channel ORDER BY channel"]);
    let stdout = ok(&out);
    let expected = reference(
        d,
        "SELECT channel, count(*) AS n FROM bids GROUP BY channel",
    );
    for row in &expected {
        assert!(
            stdout.contains(&format!("| {:<7} | {}", row[0], row[1])),
            "{row:?} not in\n{stdout}"
        );
    }
    // CTE with an uncorrelated scalar subquery (planned as a join across stages).
    let sql = "WITH t AS (SELECT auction, sum(price) AS s FROM bids GROUP BY auction) SELECT count(*) AS above FROM t WHERE s > (SELECT avg(s) FROM t)";
    let above = &reference(d, sql)[0][0];
    let stdout = ok(&sluice(
        d,
        &["run", "-e", &sql.replace("FROM bids", "FROM 'data/bids/'")],
    ));
    assert!(
        stdout.contains(&format!("| {above:<5} |")),
        "expected {above}:\n{stdout}"
    );
    let out = sluice(
        d,
        &[
            "run",
            "-e",
            "SELECT auction, price FROM 'data/bids/' WHERE price > 100",
            "--max-result-rows",
            "7",
        ],
    );
    let stdout = ok(&out);
    let total = reference(d, "SELECT count(*) FROM bids WHERE price > 100")[0][0]
        .parse::<u64>()
        .unwrap();
    assert!(
        stdout.contains(&format!(
            "7 of {total} rows shown; {} rows left out",
            total - 7
        )),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("| ")).count(),
        8,
        "header + 7 rows:\n{stdout}"
    );
}

/// The driver as a library: what it reports reaches a program as events (the `sluice` binary
/// renders the same events on the terminal). A bounded job reports its one epoch's progress
/// record — the one in the checkpoint — and a rerun on the same checkpoint reports nothing.
#[test]
fn a_program_observes_the_drivers_events() {
    use sluice_engine::driver::events::Collect;
    use sluice_engine::driver::{self, ClusterMode, DriverConfig, EpochOutcome, Event};
    use sluice_engine::job::{Job, JobText};
    use std::sync::Arc;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);
    // Relative paths resolve against the working directory: name the files absolutely.
    let sources = SOURCES.replace("'data/", &format!("'{}/data/", d.display()));
    let text = format!(
        "{sources}\nCREATE TABLE out WITH (connector = 'parquet', path = '{}');\n\
         INSERT INTO out SELECT channel, count(*) AS n FROM bids GROUP BY channel;",
        d.join("out").display()
    );
    let run = || {
        let config = DriverConfig {
            cluster: ClusterMode::Local {
                executors: 2,
                max_executors: 2,
                slots_per_executor: 1,
                memory_bytes: 512 << 20,
            },
            parallelism: None,
            checkpoint: Some(d.join("ckpt")),
            max_result_rows: 1000,
            heartbeat_timeout: Duration::from_secs(10),
            limits: Default::default(),
            executor_wait: Duration::from_secs(60),
            max_executor_restarts: 2,
            allocation: Default::default(),
            work_dir: None,
            program: sluice::sluice_binary(),
            trigger: None,
            retain_epochs: 10,
            fsync: true,
            no_data_epochs: false,
            watermark_epochs: true,
            max_epochs: None,
            watermark_idle_timeout: None,
            adaptive: Default::default(),
            broadcast_bytes: sluice_engine::plan::DEFAULT_BROADCAST_BYTES,
        };
        let job = Job::parse(JobText {
            origin: "job".into(),
            text: text.clone(),
        })
        .unwrap();
        let events = Arc::new(Collect::default());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let report = runtime
            .block_on(driver::run(job, config, events.clone()))
            .unwrap();
        let events = events.0.lock().unwrap().clone();
        (report, events)
    };

    let (report, events) = run();
    assert_eq!(report.outcome, EpochOutcome::Committed);
    let committed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::EpochCommitted { progress, bounded } => Some((progress.clone(), *bounded)),
            _ => None,
        })
        .collect();
    assert_eq!(committed.len(), 1, "{events:?}");
    // The query started with its DAG, the epoch started, then every stage of the DAG finished
    // once (after its tasks), then it committed; the executors were reported on the way.
    assert!(
        matches!(&events[0], Event::QueryStarted { stages, bounded: true, .. } if stages.len() == report.stages),
        "{events:?}"
    );
    assert!(
        matches!(events[1], Event::EpochStarted { epoch: 0, stages, .. } if stages == report.stages),
        "{events:?}"
    );
    let tasks = events
        .iter()
        .filter(|e| matches!(e, Event::TaskFinished { epoch: 0, .. }))
        .count();
    assert_eq!(tasks as u64, report.tasks, "{events:?}");
    let mut stages: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::StageFinished {
                epoch: 0, stage, ..
            } => Some(*stage),
            _ => None,
        })
        .collect();
    stages.sort();
    assert_eq!(stages, (0..report.stages).collect::<Vec<_>>(), "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Executors { executors } if executors.len() == 2)),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(Event::EpochCommitted { .. })),
        "{events:?}"
    );
    let (progress, bounded) = &committed[0];
    assert!(bounded);
    let recorded = sluice::progress::record(&d.join("ckpt"), 0);
    assert_eq!(serde_json::to_value(&**progress).unwrap(), recorded);
    assert_eq!(recorded["sink_rows"].as_u64(), Some(report.output_rows));
    assert_eq!(read_rows(&d.join("out")).len() as u64, report.output_rows);

    let (again, events) = run();
    assert_eq!(again.outcome, EpochOutcome::AlreadyCommitted);
    assert!(events.is_empty(), "{events:?}");
}
