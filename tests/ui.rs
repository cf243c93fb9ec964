//! The driver's web UI, JSON API and Prometheus metrics, end to end: a real browser (Debian's
//! headless Chromium) on the pages of a running streaming query, `/metrics` parsed by the
//! Prometheus client's own parser and checked against the checkpoint's progress records, the
//! token rule, and history served from a stopped query's checkpoint.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{committed_epochs, eventually, fails, ok, sluice, Logged};
use sluice::web::{get, request, run_browser_script};

/// A streaming job without a broker: the Nexmark bid stream counted in 2-second windows.
fn write_job(dir: &Path) {
    std::fs::write(
        dir.join("job.sql"),
        "CREATE TABLE bid (WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)\n\
           WITH (connector = 'nexmark', kind = 'bid', rate = '5000');\n\
         CREATE TABLE counts WITH (connector = 'parquet', path = 'out/counts/');\n\
         INSERT INTO counts\n\
         SELECT window_start, window_end, auction, count(*) AS bids\n\
         FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND))\n\
         GROUP BY window_start, window_end, auction;\n",
    )
    .unwrap();
}

/// Starts the job with the UI on a free loopback port; returns the process and the UI's URL.
fn start(dir: &Path, extra: &[&str]) -> (Logged, String) {
    let mut args = vec![
        "run",
        "job.sql",
        "--checkpoint",
        "ckpt",
        "--trigger",
        "500ms",
        "--ui",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let run = Logged::spawn(dir, &args, &[]);
    run.wait_for("UI at http://", Duration::from_secs(60));
    let log = run.stderr.lock().unwrap().clone();
    let url = log
        .lines()
        .find_map(|l| l.split("UI at ").nth(1))
        .map(|u| u.split_whitespace().next().unwrap().to_string())
        .unwrap();
    (run, url.trim_end_matches('/').to_string())
}

fn stop(mut run: Logged) {
    let _ = run.child.kill();
    let _ = run.child.wait();
}

/// Runs `job.sql` in `dir` for `epochs` epochs on `ckpt` (trigger `trigger`), without the UI.
fn run_epochs(dir: &Path, trigger: &str, epochs: &str) {
    ok(&sluice(
        dir,
        &[
            "run",
            "job.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            trigger,
            "--max-epochs",
            epochs,
            "--ui",
            "off",
        ],
    ));
}

#[test]
fn a_real_browser_sees_live_plots_and_a_growing_epochs_table() {
    let dir = tempfile::tempdir().unwrap();
    write_job(dir.path());
    let (run, url) = start(dir.path(), &[]);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = run_browser_script(
        r##"
    const [url, shots] = args;
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const result = {};
    await page.goto(url + "/");
    // Live: the plots fill as epochs commit, without a reload.
    await page.waitForFunction(() => window.sluice && window.sluice.epochs.length >= 3, null, { timeout: 60000 });
    await page.waitForFunction(() => Number(document.body.dataset.ticks) >= 3, null, { timeout: 30000 });
    result.plots = await page.evaluate(() => Object.fromEntries(
      Object.entries(window.sluice.plots).map(([id, p]) => [id, { points: p.data[0].length, series: p.series.length - 1,
        values: p.data.slice(1).map((s) => s.filter((v) => v != null).length) }])));
    result.summary = await page.evaluate(() => document.querySelector("#summary").innerText);
    await page.screenshot({ path: shots + "/overview.png", fullPage: true });
    await page.goto(url + "/epochs");
    await page.waitForSelector("#epochs-table tbody tr", { timeout: 30000 });
    result.epochRows = [await page.locator("#epochs-table tbody tr").count()];
    await page.waitForTimeout(3000);
    result.epochRows.push(await page.locator("#epochs-table tbody tr").count());
    await page.screenshot({ path: shots + "/epochs.png", fullPage: true });
    await page.goto(url + "/stages");
    await page.waitForSelector("#stages-list .stage", { timeout: 30000 });
    result.stages = await page.locator("#stages-list .stage").count();
    result.stageText = await page.locator("#stages-list").innerText();
    await page.screenshot({ path: shots + "/stages.png", fullPage: true });
    await page.goto(url + "/executors");
    await page.waitForSelector("#executors-table tbody tr", { timeout: 30000 });
    result.executors = await page.locator("#executors-table tbody tr").count();
    await page.screenshot({ path: shots + "/executors.png", fullPage: true });
    console.log(JSON.stringify(result));
"##,
        &[&url, shots.to_str().unwrap()],
    );
    stop(run);
    let result: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    println!("screenshots in {}: {result}", shots.display());
    for plot in [
        "plot-rates",
        "plot-phases",
        "plot-lag",
        "plot-state",
        "plot-rss",
    ] {
        let p = &result["plots"][plot];
        assert!(p["points"].as_u64().unwrap() >= 2, "{plot}: {p}");
        assert!(
            p["values"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v.as_u64().unwrap() >= 2),
            "{plot} has no series with points: {p}"
        );
    }
    // Rates hold both series; the RSS plot one per executor.
    assert_eq!(result["plots"]["plot-rates"]["series"], 2);
    assert_eq!(result["plots"]["plot-rss"]["series"], 2);
    let rows = result["epochRows"].as_array().unwrap();
    assert!(
        rows[1].as_u64() > rows[0].as_u64(),
        "the epochs table did not grow: {rows:?}"
    );
    assert!(result["summary"].as_str().unwrap().contains("running"));
    // The DAG's stages, each with its tasks' spread.
    assert!(result["stages"].as_u64().unwrap() >= 2);
    let stage_text = result["stageText"].as_str().unwrap();
    assert!(stage_text.contains("StatefulAggregateExec"), "{stage_text}");
    assert!(stage_text.contains("task time"), "{stage_text}");
    assert_eq!(result["executors"], 2);
    for page in ["overview", "epochs", "stages", "executors"] {
        let png = shots.join(format!("{page}.png"));
        assert!(std::fs::metadata(&png).unwrap().len() > 10_000, "{png:?}");
    }
}

/// `/metrics`, parsed by the Prometheus client library's OpenMetrics parser, agrees with the
/// progress records of the epochs it counts.
#[test]
fn metrics_agree_with_the_progress_records_of_the_same_epochs() {
    let dir = tempfile::tempdir().unwrap();
    write_job(dir.path());
    let (run, url) = start(dir.path(), &[]);
    assert!(eventually(Duration::from_secs(60), || committed_epochs(
        &dir.path().join("ckpt")
    ) >= 4));
    let response = get(&format!("{url}/metrics"));
    stop(run);
    assert_eq!(response.status, 200);
    let text = &response.body;
    let parsed = parse_metrics(text);
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        parsed
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels.len() == l.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{text}"))
    };
    let last = value("sluice_last_committed_epoch", &[]) as u64;
    let records: Vec<serde_json::Value> = sluice::progress::records(&dir.path().join("ckpt"))
        .into_iter()
        .filter(|r| r["epoch"].as_u64().unwrap() <= last)
        .collect();
    assert_eq!(
        records.len() as u64,
        last + 1,
        "one record per counted epoch"
    );
    let sum = |f: &dyn Fn(&serde_json::Value) -> f64| records.iter().map(f).sum::<f64>();
    assert_eq!(
        value("sluice_epochs_committed_total", &[]),
        (last + 1) as f64
    );
    assert_eq!(
        value("sluice_input_records_total", &[("table", "bid")]),
        sum(&|r| r["input_rows"].as_f64().unwrap())
    );
    assert_eq!(
        value("sluice_sink_rows_total", &[("table", "counts")]),
        sum(&|r| r["sinks"]["counts"]["rows"].as_f64().unwrap_or(0.0))
    );
    assert_eq!(
        value("sluice_task_attempts_total", &[("outcome", "succeeded")]),
        sum(&|r| r["task_outcomes"]["succeeded"].as_f64().unwrap())
    );
    assert_eq!(
        value("sluice_epoch_duration_seconds_count", &[("phase", "total")]),
        (last + 1) as f64
    );
    let total_s = sum(&|r| r["duration_ms"]["total"].as_f64().unwrap()) / 1e3;
    let got = value("sluice_epoch_duration_seconds_sum", &[("phase", "total")]);
    assert!(
        (got - total_s).abs() < 1e-6 * (1.0 + total_s),
        "{got} vs {total_s}"
    );
    let state = &records.last().unwrap()["state"][0];
    assert_eq!(
        value("sluice_state_rows", &[("operator", "0")]),
        state["rows_total"].as_f64().unwrap()
    );
    assert_eq!(
        value("sluice_spilled_bytes_total", &[]),
        sum(&|r| r["spilled_bytes"].as_f64().unwrap())
    );
    assert_eq!(
        value("sluice_memory_pool_peak_bytes", &[]),
        records.last().unwrap()["peak_pool_bytes"].as_f64().unwrap()
    );
    assert_eq!(value("sluice_executors", &[]), 2.0);
    assert_eq!(value("sluice_lost_executors_total", &[]), 0.0);
    assert!(
        parsed
            .iter()
            .filter(|(n, _, v)| n == "sluice_executor_rss_bytes" && *v > 1e6)
            .count()
            == 2,
        "{text}"
    );
    for name in [
        "sluice_dead_letter_records_total",
        "sluice_skipped_records_total",
    ] {
        assert_eq!(value(name, &[("table", "bid")]), 0.0);
    }
}

/// Every sample of an OpenMetrics text, as `prometheus_client.openmetrics.parser` reads it:
/// (sample name, labels, value).
fn parse_metrics(text: &str) -> Vec<(String, std::collections::BTreeMap<String, String>, f64)> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(sluice::table::readers_python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_ui_other_hosts_can_reach_needs_a_token_on_every_request() {
    let dir = tempfile::tempdir().unwrap();
    write_job(dir.path());
    let err = fails(&sluice(
        dir.path(),
        &["run", "job.sql", "--max-epochs", "1", "--ui", "0.0.0.0:0"],
    ));
    assert!(err.contains("give it a token (--ui-token"), "{err}");
    let (run, url) = start(dir.path(), &["--ui", "0.0.0.0:0", "--ui-token", "s3cret"]);
    assert!(url.contains("0.0.0.0:"), "{url}");
    let url = url.replace("0.0.0.0", "127.0.0.1");
    let url = url
        .split('?')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    for path in ["/", "/api/v1/query", "/metrics", "/static/app.js"] {
        let r = get(&format!("{url}{path}"));
        assert_eq!(r.status, 401, "{path} without the token");
        let r = get(&format!("{url}{path}?token=wrong"));
        assert_eq!(r.status, 401, "{path} with a wrong token");
        let r = get(&format!("{url}{path}?token=s3cret"));
        assert_eq!(r.status, 200, "{path} with the token: {}", r.body);
        let r = request(
            "GET",
            &format!("{url}{path}"),
            &[("Authorization", "Bearer s3cret")],
        );
        assert_eq!(r.status, 200, "{path} with the bearer token");
    }
    // Read-only: nothing but GET.
    let r = request("POST", &format!("{url}/api/v1/query?token=s3cret"), &[]);
    assert_eq!(r.status, 405);
    stop(run);
}

/// `sluice ui --checkpoint` serves a stopped query's epochs from its progress records.
#[test]
fn history_serves_a_stopped_querys_epochs_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    write_job(dir.path());
    run_epochs(dir.path(), "200ms", "4");
    let history = Logged::spawn(
        dir.path(),
        &["ui", "--checkpoint", "ckpt", "--ui", "127.0.0.1:0"],
        &[],
    );
    history.wait_for("at http://", Duration::from_secs(30));
    let log = history.stderr.lock().unwrap().clone();
    assert!(log.contains("4 epochs recorded"), "{log}");
    let url = log
        .split("at http://")
        .nth(1)
        .and_then(|r| r.split(['/', ';', ' ']).next())
        .map(|host| format!("http://{host}"))
        .unwrap();
    let query: serde_json::Value =
        serde_json::from_str(&get(&format!("{url}/api/v1/query")).body).unwrap();
    assert_eq!(query["mode"], "history");
    assert_eq!(query["state"], "stopped");
    assert_eq!(query["last_committed_epoch"], 3);
    let epochs: serde_json::Value =
        serde_json::from_str(&get(&format!("{url}/api/v1/epochs")).body).unwrap();
    let records = sluice::progress::records(&dir.path().join("ckpt"));
    assert_eq!(epochs.as_array().unwrap(), &records);
    let one = get(&format!("{url}/api/v1/epochs/2"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&one.body).unwrap(),
        records[2]
    );
    assert_eq!(get(&format!("{url}/api/v1/epochs/99")).status, 404);
    let stages: serde_json::Value =
        serde_json::from_str(&get(&format!("{url}/api/v1/stages")).body).unwrap();
    assert_eq!(stages["epoch"], 3);
    let list = stages["stages"].as_array().unwrap();
    assert!(list.len() >= 2, "{stages}");
    // The DAG is planned again from the job the checkpoint keeps.
    assert!(
        list.iter().any(|s| s["plan"]
            .as_str()
            .is_some_and(|p| p.contains("StatefulAggregateExec"))),
        "{stages}"
    );
    assert!(list.iter().all(|s| s["run"].is_object()), "{stages}");
    assert!(get(&format!("{url}/metrics"))
        .body
        .contains("sluice_epochs_committed_total 4"));
    assert!(get(&format!("{url}/epochs"))
        .body
        .contains("<title>Sluice</title>"));
    stop(history);
}

/// A bounded run draws a progress bar (stages, tasks, rows) on a terminal, and nothing extra
/// when stderr is not one.
#[test]
fn a_bounded_run_shows_progress_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("count.sql"),
        "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', events = '300000');\n\
         SELECT auction % 10 AS k, count(*) AS n FROM bid GROUP BY 1 ORDER BY 1;\n",
    )
    .unwrap();
    let plain = ok(&sluice(dir.path(), &["run", "count.sql", "--ui", "off"]));
    let out = sluice(dir.path(), &["run", "count.sql", "--ui", "off"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("tasks ·"), "{stderr}");
    assert!(plain.contains("10 rows"), "{plain}");
    // `script` gives the command a terminal (util-linux, on every Debian), of the type named
    // by TERM: set here, as a terminal sets it, since CI may run without one.
    let command = format!(
        "{} run count.sql --ui off",
        sluice::sluice_binary().display()
    );
    let on_terminal = |term: &str| {
        let tty = std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("TERM", term)
            .current_dir(dir.path())
            .output()
            .expect("running script");
        let text = String::from_utf8_lossy(&tty.stdout).replace('\r', "\n");
        assert!(tty.status.success(), "{text}");
        assert!(text.contains("10 rows"), "{text}");
        text
    };
    let text = on_terminal("xterm-256color");
    assert!(text.contains("tasks · stages"), "no progress bar:\n{text}");
    assert!(text.contains("stages 3/3"), "{text}");
    // A dumb terminal (TERM=dumb) cannot redraw a line: no bar there either.
    let text = on_terminal("dumb");
    assert!(!text.contains("tasks ·"), "{text}");
}

/// `sluice checkpoint check` tells whether a changed windowed query can resume and names what
/// changed; `checkpoint inspect --json` gives the checkpoint as one object.
#[test]
fn checkpoint_check_and_inspect_json_on_a_windowed_query() {
    let dir = tempfile::tempdir().unwrap();
    write_job(dir.path());
    run_epochs(dir.path(), "200ms", "3");
    let same = ok(&sluice(
        dir.path(),
        &["checkpoint", "check", "job.sql", "ckpt"],
    ));
    assert!(
        same.contains("is the one that wrote this checkpoint"),
        "{same}"
    );
    let text = std::fs::read_to_string(dir.path().join("job.sql")).unwrap();
    std::fs::write(
        dir.path().join("changed.sql"),
        text.replace("INTERVAL '2' SECOND", "INTERVAL '5' SECOND"),
    )
    .unwrap();
    let out = sluice(dir.path(), &["checkpoint", "check", "changed.sql", "ckpt"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = fails(&out);
    assert!(err.contains("cannot resume from ckpt"), "{err}");
    assert!(
        stdout.starts_with("the query writing 'counts' (its operator state and output came from the old query) changed"),
        "{stdout}"
    );
    assert!(stdout.contains("INTERVAL '5' SECOND"), "{stdout}");
    // The refusal of the changed job points at the command.
    let refused = fails(&sluice(
        dir.path(),
        &[
            "run",
            "changed.sql",
            "--checkpoint",
            "ckpt",
            "--max-epochs",
            "1",
            "--ui",
            "off",
        ],
    ));
    assert!(refused.contains("sluice checkpoint check JOB"), "{refused}");

    let json: serde_json::Value = serde_json::from_str(&ok(&sluice(
        dir.path(),
        &["checkpoint", "inspect", "ckpt", "--json"],
    )))
    .unwrap();
    let epochs = json["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3, "{json}");
    let records = sluice::progress::records(&dir.path().join("ckpt"));
    for (e, record) in epochs.iter().zip(&records) {
        assert_eq!(e["committed"], true);
        assert_eq!(&e["progress"], record);
        assert!(e["input"]["sources"]["bid"].is_object(), "{e}");
    }
    let parts = json["job"]["parts"].as_array().unwrap();
    assert!(parts.iter().any(|p| p[0] == "insert counts"), "{parts:?}");
    assert_eq!(json["plan_fingerprint"], json["job"]["fingerprint"]);
}

/// `sluice checkpoint state` shows a windowed aggregation's open windows: every row read is in
/// exactly one tumbling window, so the counts in state plus the counts already emitted add up
/// to the rows read; the Parquet it writes reads back with pyarrow.
#[test]
fn checkpoint_state_holds_every_row_not_yet_emitted() {
    let dir = tempfile::tempdir().unwrap();
    write_job(dir.path());
    run_epochs(dir.path(), "300ms", "8");
    let records = sluice::progress::records(&dir.path().join("ckpt"));
    let read: u64 = records
        .iter()
        .map(|r| r["input_rows"].as_u64().unwrap())
        .sum();
    let late: u64 = records
        .iter()
        .map(|r| r["late_records"].as_u64().unwrap())
        .sum();
    let emitted: i64 = common::int_column(&dir.path().join("out/counts"), "bids")
        .iter()
        .sum();
    let printed = ok(&sluice(
        dir.path(),
        &["checkpoint", "state", "ckpt", "--limit", "3"],
    ));
    assert!(printed.contains("| partition | window_start"), "{printed}");
    ok(&sluice(
        dir.path(),
        &["checkpoint", "state", "ckpt", "--output", "state.parquet"],
    ));
    let script = r#"
import sys, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
print(sum(t.column("count(Int64(1))[count]").to_pylist()), t.num_rows, sorted(set(t.column("partition").to_pylist())))
"#;
    let out = std::process::Command::new(sluice::table::readers_python())
        .args([
            "-c",
            script,
            dir.path().join("state.parquet").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let in_state: i64 = it.next().unwrap().parse().unwrap();
    let keys: u64 = it.next().unwrap().parse().unwrap();
    assert!(keys > 0, "{text}");
    assert_eq!(
        in_state + emitted,
        (read - late) as i64,
        "state {in_state} + emitted {emitted} vs read {read} - late {late}"
    );
    // A job with no stateful aggregation has no state to show.
    std::fs::write(
        dir.path().join("plain.sql"),
        "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', rate = '1000');\n\
         CREATE TABLE raw WITH (connector = 'parquet', path = 'out/raw/');\n\
         INSERT INTO raw SELECT * FROM bid;\n",
    )
    .unwrap();
    let err = fails(&sluice(
        dir.path(),
        &["checkpoint", "state", "ckpt", "--job", "plain.sql"],
    ));
    assert!(err.contains("no stateful aggregation"), "{err}");
}
