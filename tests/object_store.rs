//! Object storage: a Kafka-to-Parquet query whose sink, dead letters and checkpoint are all on a
//! real S3-compatible server (moto's, started by the test kit), with `kill -9` of the driver and
//! of executors at random moments; an independent reader (pyarrow's `S3FileSystem`) then finds
//! every record exactly once and no staged object under a `*.parquet` name. And the lease: two
//! drivers cannot run on one S3 checkpoint, and a driver whose lease was taken over stops
//! without committing.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{children_of, spawn, stream, test_seed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::broker::Broker;
use sluice::datagen::STREAM_BASE_MS;
use sluice::s3::{FlakyProxy, S3Server};

/// Record `i`: JSON, except every 7919th, which is not (it goes to the dead letters).
fn record(i: u64) -> Vec<u8> {
    if i % 7919 == 100 {
        return format!("not json {i}").into_bytes();
    }
    format!(
        "{{\"id\":{i},\"auction\":{},\"price\":{}}}",
        i % 97,
        i * 3 % 1000
    )
    .into_bytes()
}

fn is_bad(i: u64) -> bool {
    i % 7919 == 100
}

fn job_sql(broker: &Broker) -> String {
    format!(
        "CREATE TABLE bids (id BIGINT, auction BIGINT, price BIGINT)\n\
         WITH (connector = 'kafka', bootstrap_servers = '{}', topic = 'bids', format = 'json',\n\
               start = 'earliest', max_records_per_trigger = '4000',\n\
               on_bad_record = 'dead_letter', dead_letter_path = 's3://lake/dead/');\n\
         CREATE TABLE archive WITH (connector = 'parquet', path = 's3://lake/archive/');\n\
         INSERT INTO archive SELECT id, auction, price FROM bids;\n",
        broker.bootstrap()
    )
}

fn env(s3: &S3Server) -> Vec<(&'static str, String)> {
    let mut env = s3.env();
    env.push(("SLUICE_LOG", "info".into()));
    env
}

fn start_driver(dir: &Path, s3: &S3Server, extra: &[&str]) -> Child {
    let env = env(s3);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut args = vec![
        "run",
        "job.sql",
        "--checkpoint",
        "s3://lake/ckpt",
        "--executors",
        "3",
        "--slots",
        "1",
        "--trigger",
        "300ms",
        "--heartbeat-timeout",
        "2s",
    ];
    args.extend_from_slice(extra);
    spawn(dir, &args, &env)
}

/// Commits recorded in the S3 checkpoint (listed with pyarrow).
fn commits(s3: &S3Server) -> usize {
    s3.read("lake", "ckpt/commits", "none").objects.len()
}

/// Waits until the checkpoint records a commit; the driver must keep running meanwhile.
fn wait_first_commit(driver: &mut Child, s3: &S3Server) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while commits(s3) == 0 {
        if let Some(status) = driver.try_wait().unwrap() {
            let mut out = String::new();
            if let Some(mut stderr) = driver.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut out);
            }
            panic!("the driver exited ({status}): {out}");
        }
        assert!(Instant::now() < deadline, "no epoch committed in 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kafka_to_parquet_on_s3_exactly_once_through_driver_and_executor_kills() {
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let records: u64 = 60_000;
    let broker = Broker::start();
    broker.create_topic("bids", 3);
    let s3 = S3Server::start();
    s3.create_bucket("lake");
    // The driver's directory holds only the job text; executors get their own work
    // directories; everything else is in the bucket.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("driver");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("job.sql"), job_sql(&broker)).unwrap();

    let bootstrap = broker.bootstrap();
    let producer = std::thread::spawn(move || {
        let producer = sluice::broker::Producer::connect(&bootstrap);
        let mut batch = Vec::new();
        for i in 0..records {
            batch.push(((i % 3) as i32, i.to_string().into_bytes(), record(i)));
            if batch.len() == 2_000 || i + 1 == records {
                producer.send_all("bids", std::mem::take(&mut batch));
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });

    let mut driver = start_driver(&dir, &s3, &[]);
    wait_first_commit(&mut driver, &s3);
    let mut faults = Vec::new();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        let executors = children_of(driver.id());
        if rng.random_bool(0.5) || executors.is_empty() {
            // The driver dies; a new one takes the lease over at once (the old holder is a
            // dead process on this host) and completes what was recorded.
            driver.kill().unwrap();
            driver.wait().unwrap();
            for pid in executors {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            faults.push("driver");
            driver = start_driver(&dir, &s3, &[]);
        } else {
            let victim = executors[rng.random_range(0..executors.len())];
            unsafe { libc::kill(victim as i32, libc::SIGKILL) };
            faults.push("executor");
        }
    }
    producer.join().unwrap();
    driver.kill().unwrap();
    driver.wait().unwrap();
    eprintln!("faults: {faults:?}");
    std::thread::sleep(Duration::from_millis(500));

    // The rest, to the end of what the topic holds.
    let out = common::sluice_env(
        &dir,
        &[
            "run",
            "job.sql",
            "--checkpoint",
            "s3://lake/ckpt",
            "--trigger",
            "available-now",
        ],
        &env(&s3)
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );
    common::ok(&out);

    let archive = s3.read("lake", "archive", "id");
    let mut ids = archive.values.clone();
    ids.sort_unstable();
    let expected: Vec<i64> = (0..records)
        .filter(|&i| !is_bad(i))
        .map(|i| i as i64)
        .collect();
    let duplicates = ids.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!(
        duplicates, 0,
        "records twice (seed {seed}, faults {faults:?})"
    );
    assert_eq!(
        ids.len(),
        expected.len(),
        "records lost (seed {seed}, faults {faults:?})"
    );
    assert_eq!(ids, expected);
    for object in &archive.objects {
        if object.ends_with(".parquet") {
            assert!(
                !object.contains("/.sluice-staging/")
                    && object.rsplit('/').next().unwrap().starts_with("part-"),
                "a staged or foreign object under a .parquet name: {object}"
            );
        }
    }
    let dead = s3.read("lake", "dead", "offset");
    assert_eq!(
        dead.values.len() as u64,
        (0..records).filter(|&i| is_bad(i)).count() as u64,
        "every bad record in the dead letters, once: {:?}",
        dead.objects
    );
}

#[test]
fn two_drivers_cannot_run_on_one_s3_checkpoint_and_a_driver_that_lost_its_lease_stops() {
    let broker = Broker::start();
    broker.create_topic("bids", 3);
    let s3 = S3Server::start();
    s3.create_bucket("lake");
    let root = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (root.path().join("a"), root.path().join("b"));
    for dir in [&a_dir, &b_dir] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("job.sql"), job_sql(&broker)).unwrap();
    }
    let producer = broker.producer();
    producer.send_all(
        "bids",
        (0..3000u64)
            .map(|i| ((i % 3) as i32, i.to_string().into_bytes(), record(i)))
            .collect::<Vec<_>>(),
    );
    let mut a = start_driver(&a_dir, &s3, &[]);
    wait_first_commit(&mut a, &s3);

    // A second driver on the same checkpoint, from another directory: refused, naming the first.
    let b = start_driver(&b_dir, &s3, &[]);
    let b = common::wait_output(b, Duration::from_secs(60));
    let err = common::fails(&b);
    assert!(
        err.contains("s3://lake/ckpt is in use by another driver")
            && err.contains(&format!("pid {}", a.id())),
        "{err}"
    );

    // Another driver takes the lease over (as one would after this driver stalled past the
    // lease's expiry): this driver must stop without committing again — idle, it notices at
    // its next renewal; with new records, at the latest before it would commit them.
    let far = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 600_000;
    s3.put_object(
        "lake",
        "ckpt/lease",
        &format!(
            "{{\"holder\":\"intruder\",\"owner\":\"pid 1 on elsewhere, started at 0 ms\",\
              \"host\":\"elsewhere\",\"pid\":1,\"expires_at_ms\":{far}}}"
        ),
    );
    producer.send_all(
        "bids",
        (3000..6000u64)
            .map(|i| ((i % 3) as i32, i.to_string().into_bytes(), record(i)))
            .collect::<Vec<_>>(),
    );
    let a_out = common::wait_output(a, Duration::from_secs(60));
    let err = common::fails(&a_out);
    assert!(
        err.contains("is no longer held by this driver")
            && err.contains("taken over by pid 1 on elsewhere"),
        "{err}"
    );
    // While the new holder's lease lives, no driver starts.
    let c = common::wait_output(start_driver(&b_dir, &s3, &[]), Duration::from_secs(60));
    let err = common::fails(&c);
    assert!(err.contains("pid 1 on elsewhere"), "{err}");
}

#[test]
fn a_missing_bucket_is_refused_naming_the_url_and_the_stores_answer() {
    let broker = Broker::start();
    broker.create_topic("bids", 1);
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.sql"), job_sql(&broker)).unwrap();
    let env = env(&s3);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = [
        "run",
        "job.sql",
        "--checkpoint",
        "s3://no-such-bucket/ckpt",
        "--trigger",
        "available-now",
    ];
    let out = common::sluice_env(dir.path(), &args, &env);
    let err = common::fails(&out);
    assert!(
        err.contains("s3://no-such-bucket/ckpt/metadata") && err.contains("NoSuchBucket"),
        "{err}"
    );
}

#[test]
fn windowed_aggregation_with_its_state_on_s3_survives_an_executor_kill_and_gives_datafusions_answer(
) {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    let s3 = S3Server::start();
    s3.create_bucket("lake");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("driver");
    std::fs::create_dir_all(&dir).unwrap();
    let log = root.path().join("input.jsonl");
    let job = format!(
        "{}CREATE TABLE hot WITH (connector = 'parquet', path = 's3://lake/hot/');\n\
         INSERT INTO hot\n\
         SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top\n\
         FROM TABLE(HOP(bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '6' SECOND))\n\
         GROUP BY window_start, window_end, auction;\n",
        stream::source_ddl(&broker, "bids").replace(
            "start = 'earliest'",
            "start = 'earliest', max_records_per_trigger = '400'"
        )
    );
    std::fs::write(dir.join("job.sql"), job).unwrap();
    let all = stream::bids(43, 0..12_000);
    stream::produce(&broker, "bids", &all[..6000], &log);
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let args = |trigger: &'static str| {
        vec![
            "run",
            "job.sql",
            "--checkpoint",
            "s3://lake/ckpt",
            "--executors",
            "3",
            "--slots",
            "1",
            "--parallelism",
            "3",
            "--trigger",
            trigger,
            "--heartbeat-timeout",
            "2s",
        ]
    };
    let env = env(&s3);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Once an epoch has committed (each executor holds state partitions then), one executor
    // is killed at a random moment: the driver re-runs its partitions on the others, which
    // restore them from the bucket.
    let mut driver = spawn(&dir, &args("200ms"), &env);
    wait_first_commit(&mut driver, &s3);
    stream::produce(&broker, "bids", &all[6000..], &log);
    std::thread::sleep(Duration::from_millis(rng.random_range(300..2000)));
    let executors = children_of(driver.id());
    assert_eq!(executors.len(), 3, "three executors: {executors:?}");
    let victim = executors[rng.random_range(0..executors.len())] as i32;
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let before = commits(&s3);
    let deadline = Instant::now() + Duration::from_secs(120);
    while commits(&s3) < before + 3 {
        assert!(
            Instant::now() < deadline,
            "no progress after the kill (seed {seed})"
        );
        assert!(
            driver.try_wait().unwrap().is_none(),
            "the driver exited (seed {seed})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    unsafe { libc::kill(driver.id() as i32, libc::SIGTERM) };
    common::ok(&common::wait_output(driver, Duration::from_secs(60)));
    let after_kill = tempfile::tempdir().unwrap();
    s3.download("lake", "ckpt/progress", &after_kill.path().join("progress"));
    let restored: u64 = sluice::progress::records(after_kill.path())
        .iter()
        .flat_map(|r| r["state"].as_array().cloned().unwrap_or_default())
        .map(|op| op["restored_partitions"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        restored > 0,
        "the killed executor's partitions were restored from the bucket (seed {seed})"
    );
    // Drain what is left with fresh executors (every partition restored from the bucket),
    // keeping 2 epochs: the last epoch's garbage collection deletes the older snapshots and the
    // files only they referenced from the bucket.
    let mut drain = args("available-now");
    drain.extend(["--retain-epochs", "2"]);
    common::ok(&common::sluice_env(&dir, &drain, &env));

    let local = tempfile::tempdir().unwrap();
    s3.download("lake", "ckpt/progress", &local.path().join("progress"));
    let watermark = sluice::progress::records(local.path())
        .last()
        .and_then(|r| r["watermark_ms"].as_i64())
        .expect("a watermark");
    s3.download("lake", "hot", &local.path().join("hot"));
    let got = sluice::table::read_rows(&local.path().join("hot"));
    let (lo, hi) = (STREAM_BASE_MS - 10_000, STREAM_BASE_MS + 170_000);
    let want = stream::reference_closed_windows(&log, 6000, 2000, (lo, hi), watermark);
    assert!(want.len() > 500, "the reference has {} rows", want.len());
    assert_eq!(
        got.len(),
        want.len(),
        "each closed window once (seed {seed})"
    );
    assert_eq!(got, want, "seed {seed}");
    // Executors kept only scratch locally: the driver's directory holds the job text alone.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["job.sql"],
        "nothing but the job in the driver's directory"
    );
    // The state is in the bucket, old snapshots collected: per partition, the snapshot of the
    // oldest retained epoch (or the newest before it), later ones and the full snapshot they
    // build on.
    let state = s3.read("lake", "ckpt/state", "none").objects;
    assert!(state.iter().any(|o| o.contains("/sst/")), "{state:?}");
    let mut manifests: std::collections::BTreeMap<String, usize> = Default::default();
    for object in state.iter().filter(|o| o.ends_with("/snapshot.json")) {
        let partition = object.split("/epoch-").next().unwrap().to_string();
        *manifests.entry(partition).or_default() += 1;
    }
    assert!(!manifests.is_empty(), "{state:?}");
    assert!(manifests.values().all(|&n| n <= 4), "{manifests:?}");
}

#[test]
fn throttled_and_failed_store_requests_are_retried_counted_and_lose_nothing() {
    let records: u64 = 20_000;
    let broker = Broker::start();
    broker.create_topic("bids", 3);
    let producer = broker.producer();
    let batch: Vec<_> = (0..records)
        .map(|i| ((i % 3) as i32, i.to_string().into_bytes(), record(i)))
        .collect();
    producer.send_all("bids", batch);
    let s3 = S3Server::start();
    s3.create_bucket("lake");
    // Every 4th request of the driver and executors is answered `503 Slow Down`.
    let proxy = FlakyProxy::start(&s3, 4);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.sql"), job_sql(&broker)).unwrap();
    let mut env = env(&s3);
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL", proxy.endpoint()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = common::sluice_env(
        dir.path(),
        &[
            "run",
            "job.sql",
            "--checkpoint",
            "s3://lake/ckpt",
            "--trigger",
            "available-now",
        ],
        &env,
    );
    common::ok(&out);
    assert!(
        proxy.injected() > 10,
        "{} failures injected",
        proxy.injected()
    );

    // Read back from the server directly.
    let mut ids = s3.read("lake", "archive", "id").values;
    ids.sort_unstable();
    let expected: Vec<i64> = (0..records)
        .filter(|&i| !is_bad(i))
        .map(|i| i as i64)
        .collect();
    assert_eq!(ids, expected, "every record once");
    let dead = s3.read("lake", "dead", "offset").values;
    assert_eq!(
        dead.len() as u64,
        (0..records).filter(|&i| is_bad(i)).count() as u64
    );
    let local = tempfile::tempdir().unwrap();
    s3.download("lake", "ckpt/progress", &local.path().join("progress"));
    let counted: u64 = sluice::progress::records(local.path())
        .iter()
        .map(|r| {
            r["store_retries"]
                .as_u64()
                .expect("store_retries in every record")
        })
        .sum();
    eprintln!(
        "{counted} retries counted, {} failures injected",
        proxy.injected()
    );
    assert!(
        counted > 0 && counted <= proxy.injected(),
        "{counted} retries counted in the progress records, {} failures injected",
        proxy.injected()
    );
}

#[test]
fn batch_sources_in_parquet_csv_and_json_on_s3_give_datafusions_answer() {
    let s3 = S3Server::start();
    s3.create_bucket("lake");
    // The data is generated locally (for the reference), then put in the bucket; the job runs
    // in an empty directory.
    let local = tempfile::tempdir().unwrap();
    common::generate(local.path());
    s3.upload(&local.path().join("data"), "lake", "data");
    let dir = tempfile::tempdir().unwrap();
    let query = "SELECT bd.region, count(*) AS n, sum(b.price) AS total \
                 FROM bids b JOIN bidders bd ON b.bidder = bd.bidder GROUP BY bd.region";
    // Endpoint and keys as table options this time, not variables: per-table overrides.
    let store = format!(
        "aws_endpoint = '{}', aws_allow_http = 'true', aws_access_key_id = '{}', \
         aws_secret_access_key = '{}'",
        s3.endpoint(),
        sluice::s3::ACCESS_KEY,
        sluice::s3::SECRET_KEY
    );
    std::fs::write(
        dir.path().join("job.sql"),
        format!(
            "CREATE TABLE bids WITH (connector = 'parquet', path = 's3://lake/data/bids/', {store});\n\
             CREATE TABLE bidders (bidder BIGINT, region VARCHAR, tier BIGINT)\n\
               WITH (connector = 'csv', path = 's3://lake/data/bidders.csv', {store});\n\
             CREATE TABLE out WITH (connector = 'parquet', path = 's3://lake/out/', partition_by = 'region', {store});\n\
             INSERT INTO out {query};\n"
        ),
    )
    .unwrap();
    let out = common::sluice_env(dir.path(), &["run", "job.sql", "--executors", "2"], &[]);
    common::ok(&out);
    let mut expected = common::reference(local.path(), query);
    // Hive partitioning puts the partition column last.
    for row in &mut expected {
        let region = row.remove(0);
        row.push(region);
    }
    expected.sort();
    assert_eq!(s3.read_rows("lake", "out"), expected);

    // An inline query over JSON lines named by URL (the variables, then), printed.
    let env = env(&s3);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = common::sluice_env(
        dir.path(),
        &[
            "run",
            "-e",
            "SELECT count(*) AS n, sum(amount) > 0 AS positive FROM 's3://lake/data/events/'",
        ],
        &env,
    );
    let printed = common::ok(&out);
    assert!(printed.contains("35000"), "{printed}");
}

#[test]
fn a_streamed_json_table_on_s3_is_read_file_by_file_across_runs_with_its_checkpoint_on_s3() {
    let s3 = S3Server::start();
    s3.create_bucket("lake");
    let local = tempfile::tempdir().unwrap();
    let write = |name: &str, ids: std::ops::Range<u64>| {
        let dir = local.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let text: String = ids.map(|i| format!("{{\"id\":{i}}}\n")).collect();
        std::fs::write(dir.join(format!("{name}.json")), text).unwrap();
        s3.upload(&dir, "lake", "incoming");
    };
    write("0001", 0..1000);
    write("0002", 1000..2500);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("job.sql"),
        "CREATE TABLE incoming (id BIGINT)\n\
           WITH (connector = 'json', path = 's3://lake/incoming/', stream = 'true', max_files_per_trigger = '1');\n\
         CREATE TABLE copy WITH (connector = 'parquet', path = 's3://lake/copy/');\n\
         INSERT INTO copy SELECT id FROM incoming;\n",
    )
    .unwrap();
    let env = env(&s3);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = [
        "run",
        "job.sql",
        "--checkpoint",
        "s3://lake/ckpt",
        "--trigger",
        "available-now",
    ];
    common::ok(&common::sluice_env(dir.path(), &args, &env));
    // One file per epoch: two epochs committed.
    assert_eq!(commits(&s3), 2);
    write("0003", 2500..3000);
    common::ok(&common::sluice_env(dir.path(), &args, &env));
    let mut ids = s3.read("lake", "copy", "id").values;
    ids.sort_unstable();
    assert_eq!(ids, (0..3000).collect::<Vec<i64>>(), "each file once");
}
