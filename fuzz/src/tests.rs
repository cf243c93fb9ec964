//! Every target on seed inputs — valid ones, each of their prefixes and deterministic byte
//! flips — in every `cargo test`: the quick check that the targets still build and do not
//! panic on the inputs their fuzzing starts from.
//!
//! With `SLUICE_FUZZ_CORPUS=DIR` set, each test also writes its seeds to `DIR/<target>/`, the
//! starting corpus of a fuzzing run (`SLUICE_FUZZ_CORPUS=$PWD/fuzz/corpus cargo test -p
//! sluice-fuzz`; see the README's Fuzzing section).

use super::*;

/// The seed, every prefix of it, and copies with one byte changed at a stride.
fn variants(seed: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..=seed.len()).map(|n| seed[..n].to_vec()).collect();
    let stride = (seed.len() / 64).max(1);
    for i in (0..seed.len()).step_by(stride) {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut v = seed.to_vec();
            v[i] ^= flip;
            out.push(v);
        }
    }
    out
}

/// Runs `target` on every variant of every seed, after writing the seeds to the corpus
/// directory `SLUICE_FUZZ_CORPUS` names, if set.
fn run_all(name: &str, target: fn(&[u8]), seeds: &[Vec<u8>]) {
    if let Some(corpus) = std::env::var_os("SLUICE_FUZZ_CORPUS") {
        let dir = Path::new(&corpus).join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
        }
    }
    for seed in seeds {
        for v in variants(seed) {
            target(&v);
        }
    }
}

#[test]
fn frame_decoder_on_encoded_messages() {
    use sluice_checkpoint::{Epoch, QueryId};
    use sluice_engine::protocol::{
        ExecutorId, ExecutorMetrics, FetchRequest, StageId, ToDriver, ToExecutor,
    };
    use tokio_util::codec::Encoder;
    fn frame<T: serde::Serialize>(message: &T) -> Vec<u8> {
        let mut codec = sluice_net::MessageCodec::<T>::new(64 * 1024);
        let mut buf = BytesMut::new();
        codec.encode(message, &mut buf).unwrap();
        buf.to_vec()
    }
    let query_id = QueryId::new("0123abcd").unwrap();
    let seeds = vec![
        frame(&ToExecutor::Shutdown {
            reason: "job finished".into(),
        }),
        frame(&ToExecutor::Registered {
            executor: ExecutorId(3),
        }),
        frame(&ToExecutor::ForgetEpoch {
            query_id: query_id.clone(),
            epoch: Epoch(7),
            keep: vec![(Epoch(2), sluice_engine::protocol::StageId(1))],
        }),
        frame(&ToDriver::Heartbeat(ExecutorMetrics {
            rss_bytes: 1 << 30,
            peak_rss_bytes: 1 << 31,
            running_tasks: 2,
            store_retries: 4,
        })),
        frame(&FetchRequest {
            query_id,
            epoch: Epoch(7),
            stage: StageId(1),
            map_partition: 0,
            reduce_partition: 3,
        }),
        vec![0xFF; 16],
    ];
    run_all("frame_decoder", frame_decoder, &seeds);
}

/// The stage plans of real queries decode back (the seeds `stage_plan` starts from), and
/// damaged ones are errors.
#[test]
fn stage_plans_of_real_queries_decode_and_damaged_ones_do_not_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut seeds = Vec::new();
    // Batch and streaming stages: shuffles, sorts, and the stateful window operators.
    for query in [
        "SELECT auction, count(*) AS n, max(price) AS top FROM bid GROUP BY auction",
        "SELECT auction, price FROM bid WHERE price > 100 ORDER BY price DESC LIMIT 10",
        "SELECT window_start, auction, count(*) AS n FROM TABLE(HOP(bid, DESCRIPTOR(date_time), \
         INTERVAL '2' SECOND, INTERVAL '10' SECOND)) GROUP BY window_start, window_end, auction",
        "SELECT window_start, bidder, count(*) AS n FROM TABLE(SESSION(bid, \
         DESCRIPTOR(date_time), INTERVAL '1' SECOND)) GROUP BY window_start, window_end, bidder",
    ] {
        let text = format!(
            "CREATE TABLE bid (WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND) \
             WITH (connector = 'nexmark', kind = 'bid', events = '100');\n{query};"
        );
        let job = sluice_engine::job::Job::parse(sluice_engine::job::JobText {
            origin: "seed".into(),
            text,
        })
        .unwrap();
        let planned = runtime
            .block_on(sluice_engine::plan::plan(&job, 2))
            .unwrap();
        let session = sluice_engine::executor::stage_session();
        for stage in &planned.install {
            sluice_engine::executor::decode_stage_plan(&session, &stage.plan).unwrap();
            seeds.push(stage.plan.clone());
        }
    }
    assert!(seeds.len() >= 3);
    run_all("stage_plan", stage_plan, &seeds);
}

#[test]
fn shuffle_streams_written_by_a_map_task() {
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
        ],
    )
    .unwrap();
    let bytes = futures::executor::block_on(async {
        let mut writer = sluice_net::ipc::IpcStreamWriter::new(Vec::new(), &schema).unwrap();
        writer.write(&batch).await.unwrap();
        writer.finish().await.unwrap()
    });
    run_all("shuffle_stream", shuffle_stream, &[bytes]);
}

/// Inputs fuzzing found (`fuzz/regressions/shuffle_stream/`): the reader returns an error where
/// Arrow's decoder panics.
#[test]
fn shuffle_streams_that_panic_arrows_decoder_are_errors() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let dir = Path::new(&manifest).join("regressions/shuffle_stream");
    let mut found = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let err = futures::executor::block_on(async {
            let mut reader = sluice_net::ipc::IpcStreamReader::new(&bytes[..], BytesMut::new());
            loop {
                match reader.next_batch().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return None,
                    Err(e) => return Some(e.to_string()),
                }
            }
        });
        let err = err.expect("a malformed stream is an error");
        assert!(err.contains("malformed Arrow IPC stream"), "{err}");
        found += 1;
    }
    assert!(found >= 1);
}

/// Inputs fuzzing found (`fuzz/regressions/stage_plan/`): the executor's decoder returns an
/// error where datafusion-proto panics.
#[test]
fn stage_plans_that_panic_datafusion_proto_are_errors() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let session = sluice_engine::executor::stage_session();
    let mut found = 0;
    for entry in std::fs::read_dir(Path::new(&manifest).join("regressions/stage_plan")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let err = sluice_engine::executor::decode_stage_plan(&session, &bytes)
            .expect_err("a malformed stage plan is an error");
        assert!(err.to_string().contains("malformed stage plan"), "{err}");
        found += 1;
    }
    assert!(found >= 1);
}

/// Inputs fuzzing found (`fuzz/regressions/streaming_sql/`): malformed nested SQL that
/// sqlparser 0.62 took exponential time to reject (19 s for the first one; see
/// `vendor/sqlparser/SLUICE-PATCH.md`) is rejected at once, with a location.
#[test]
fn job_texts_that_parsed_in_exponential_time_are_rejected_quickly() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let mut found = 0;
    for entry in std::fs::read_dir(Path::new(&manifest).join("regressions/streaming_sql")).unwrap()
    {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let started = std::time::Instant::now();
        let err = sluice_engine::job::Job::parse(sluice_engine::job::JobText {
            origin: "fuzz.sql".into(),
            text,
        })
        .expect_err("a malformed job is an error");
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_secs(2),
            "{}: {took:?}",
            path.display()
        );
        assert!(err.to_string().starts_with("fuzz.sql:"), "{err}");
        found += 1;
    }
    assert!(found >= 1);
}

#[test]
fn state_changelogs() {
    let mut log = vec![1u8];
    log.extend_from_slice(&2u32.to_le_bytes());
    log.extend_from_slice(b"k1");
    log.extend_from_slice(&2u32.to_le_bytes());
    log.extend_from_slice(b"v1");
    assert_eq!(
        sluice_checkpoint::state::parse_changelog(&log)
            .unwrap()
            .len(),
        1
    );
    run_all("state_changelog", state_changelog, &[log]);
}

#[test]
fn checkpoint_records_as_written() {
    let seeds = [
        r#"{"format_version":1,"query_id":"0123abcd","plan_fingerprint":"f","created_at_ms":1}"#,
        r#"{"epoch":3,"committed_at_ms":5,"output_rows":10,"max_event_ms":null}"#,
        r#"{"epoch":0,"batch_timestamp_ms":1,"sources":{},"watermark_ms":null,"partitions":2}"#,
        r#"{"files":[]}"#,
        r#"[]"#,
    ];
    assert!(
        serde_json::from_slice::<sluice_checkpoint::QueryMetadata>(seeds[0].as_bytes()).is_ok()
    );
    run_all(
        "checkpoint_records",
        checkpoint_records,
        &seeds
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    );
}

#[test]
fn kafka_json_values() {
    let good = br#"{"auction":1,"name":"a","price":1.5,"ok":true,"date_time":"2024-01-01T00:00:00","tags":["x"]}"#;
    let batch =
        sluice_connectors::kafka::decode_json_values(&kafka_schema(), &[good, b"{}"]).unwrap();
    assert_eq!(batch.num_rows(), 2);
    for (bad, why) in [
        (&b"[1]"[..], ""),
        (b"{\"auction\":\"x\"}", ""),
        (b"", "no JSON object"),
        (b"{} {}", ""),
        (b"{\"auction\":", "incomplete"),
    ] {
        let err = sluice_connectors::kafka::decode_json_values(&kafka_schema(), &[bad])
            .expect_err("refused");
        assert!(err.contains(why), "{err}");
    }
    let mut seed = good.to_vec();
    seed.push(0xFF);
    seed.extend_from_slice(b"{\"tags\":null}");
    run_all("kafka_json", kafka_json, &[seed]);
}

#[test]
fn hive_paths() {
    let values = sluice_connectors::file::partition_values(
        "/table",
        Path::new("/table/c=a%2Fb/d=__HIVE_DEFAULT_PARTITION__/f.parquet"),
    );
    assert_eq!(
        values,
        vec![("c".into(), Some("a/b".into())), ("d".into(), None)]
    );
    run_all(
        "hive_path",
        hive_path,
        &[
            b"c=a%2Fb/d=%C3%A9/f.parquet".to_vec(),
            b"=x/%/%Z/a=%F/f".to_vec(),
        ],
    );
}

#[test]
fn streaming_sql_texts() {
    let text = "CREATE TABLE bids (auction BIGINT, price BIGINT, date_time TIMESTAMP(3), \
                WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
                WITH (connector = 'kafka', bootstrap_servers = 'b:9092', topic = 't');\n\
                SELECT window_start, count(*) FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), \
                INTERVAL '10' SECOND)) GROUP BY window_start, window_end;";
    let mut seeds = vec![text.as_bytes().to_vec()];
    // And every example job a user starts from.
    // (The manifest directory at run time: cargo reuses test binaries across checkouts.)
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    for entry in std::fs::read_dir(Path::new(&manifest).join("../examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sql") {
            seeds.push(std::fs::read(path).unwrap());
        }
    }
    for seed in &seeds {
        sluice_engine::job::Job::parse(sluice_engine::job::JobText {
            origin: "seed".into(),
            text: String::from_utf8(seed.clone()).unwrap(),
        })
        .unwrap();
    }
    assert!(seeds.len() >= 4);
    run_all("streaming_sql", streaming_sql, &seeds);
}
