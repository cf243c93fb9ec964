//! The cluster's processes and network: mutual TLS, malformed frames, lost executors, lost
//! drivers, interrupts, and the standalone cluster manager.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sluice::table::{all_files, read_rows};
use sluice_net::tls::{ALPN, CLUSTER_SERVER_NAME};
use sluice_net::{ClusterCa, ClusterEndpoint, NodeIdentity, TransportSettings};

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const GROUP_BY: &str = "CREATE TABLE totals WITH (connector = 'parquet', path = 'out/totals', partition_by = 'channel');
INSERT INTO totals SELECT channel, auction, count(*) AS n, sum(price) AS total FROM bids GROUP BY channel, auction;";

fn group_by_job(d: &std::path::Path) {
    std::fs::write(d.join("job.sql"), format!("{SOURCES}\n{GROUP_BY}")).unwrap();
}

/// `sluice driver job.sql` on `listen` with checkpoint `ckpt`, waiting for two executors.
fn standalone_driver(d: &std::path::Path, listen: &str, extra: &[&str]) -> Logged {
    let mut args = vec![
        "driver",
        "job.sql",
        "--listen",
        listen,
        "--cluster-dir",
        "cluster",
        "--min-executors",
        "2",
        "--checkpoint",
        "ckpt",
    ];
    args.extend_from_slice(extra);
    Logged::spawn(d, &args, &[])
}

/// Two standalone executors (one slot each) joining the driver at `listen`, logged.
fn standalone_executors(d: &std::path::Path, listen: &str, env: &[(&str, &str)]) -> Vec<Logged> {
    let args = [
        "executor",
        "--driver",
        listen,
        "--cluster-dir",
        "cluster",
        "--slots",
        "1",
    ];
    (0..2).map(|_| Logged::spawn(d, &args, env)).collect()
}

fn expected(d: &std::path::Path) -> Vec<Vec<String>> {
    reference(d, "SELECT auction, count(*) AS n, sum(price) AS total, channel FROM bids GROUP BY channel, auction")
}

/// A QUIC client with a hand-built TLS configuration.
fn raw_client(tls: rustls::ClientConfig) -> quinn::Endpoint {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    ep
}

/// Whether `addr` lets this client in: connected *and* not closed by the server right after.
async fn admitted(ep: &quinn::Endpoint, addr: SocketAddr) -> bool {
    let Ok(connecting) = ep.connect(addr, CLUSTER_SERVER_NAME) else {
        return false;
    };
    let Ok(conn) = connecting.await else {
        return false;
    };
    // TLS 1.3: the server checks the client certificate after the client finishes; a refusal
    // arrives as a close right after.
    let Ok((mut send, _recv)) = conn.open_bi().await else {
        return false;
    };
    let _ = send.write_all(b"\0\0\0\0").await;
    tokio::time::timeout(Duration::from_secs(2), conn.closed())
        .await
        .is_err()
}

#[test]
fn standalone_driver_refuses_strangers_survives_malformed_frames_and_runs_with_joining_executors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);
    group_by_job(d);
    ok(&sluice(d, &["cluster", "init", "cluster"]));
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let driver = spawn(
        d,
        &[
            "driver",
            "job.sql",
            "--listen",
            &listen,
            "--cluster-dir",
            "cluster",
            "--min-executors",
            "2",
            "--register-timeout-secs",
            "90",
        ],
        &[],
    );
    let addr: SocketAddr = listen.parse().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ca = ClusterCa::load_from_dir(&d.join("cluster")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().unwrap()).unwrap();

        // 1. A client with no certificate is refused.
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        assert!(
            !admitted(&raw_client(tls), addr).await,
            "a peer without a certificate must be refused"
        );

        // 2. A client whose certificate comes from another cluster's CA is refused.
        let stranger = ClusterCa::generate("other")
            .unwrap()
            .issue("stranger")
            .unwrap();
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(
                stranger.cert_chain().unwrap(),
                stranger.private_key().unwrap(),
            )
            .unwrap();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        assert!(
            !admitted(&raw_client(tls), addr).await,
            "a peer from another CA must be refused"
        );

        // 3. A member sending an oversized frame, then one sending garbage, are each closed.
        let member = NodeIdentity::load_or_issue(&d.join("cluster"), &ca, "tester").unwrap();
        let ep = ClusterEndpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            &ca,
            &member,
            &TransportSettings::default(),
        )
        .unwrap();
        for bytes in [
            &[0xffu8, 0xff, 0xff, 0xff, 1, 2, 3][..],
            &[0, 0, 0, 3, 0xff, 0xff, 0xff][..],
        ] {
            let conn = ep.connect(addr).await.expect("a member is admitted");
            let (mut send, _recv) = conn.open_bi().await.unwrap();
            send.write_all(bytes).await.unwrap();
            let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
                .await
                .expect("the driver closes a peer sending malformed frames");
            assert!(format!("{reason}").contains("malformed frame"), "{reason}");
        }
    });

    // 4. The driver still serves real executors: two join, the job runs and is correct.
    let executors: Vec<_> = (0..2)
        .map(|_| {
            spawn(
                d,
                &[
                    "executor",
                    "--driver",
                    &listen,
                    "--cluster-dir",
                    "cluster",
                    "--slots",
                    "1",
                ],
                &[],
            )
        })
        .collect();
    let out = wait_output(driver, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(&out);
    assert!(
        stderr.contains("malformed frame"),
        "the closing was logged:\n{stderr}"
    );
    assert_eq!(read_rows(&d.join("out/totals")), expected(d));
    for e in executors {
        let out = wait_output(e, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "executor exits cleanly after the job: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Starts a slow job (each task waits `delay_ms`), returns once its epoch is being scheduled,
/// with the executor pids.
fn slow_job(d: &std::path::Path, delay_ms: &str) -> (Logged, Vec<u32>) {
    let driver = Logged::spawn(
        d,
        &[
            "run",
            "job.sql",
            "--executors",
            "2",
            "--events",
            "events.jsonl",
        ],
        &[("SLUICE_TEST_TASK_DELAY_MS", delay_ms)],
    );
    wait_for_event(
        &d.join("events.jsonl"),
        "epoch_started",
        Duration::from_secs(60),
        |e| e["event"] == "epoch_started",
    );
    let executors = children_of(driver.child.id());
    assert_eq!(executors.len(), 2, "two executor processes");
    std::thread::sleep(Duration::from_millis(300)); // the first tasks reach the executors
    (driver, executors)
}

#[test]
fn an_executor_killed_mid_epoch_costs_only_its_own_tasks_and_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);
    group_by_job(d);
    // Three executors, two slots each: six map tasks, then six tasks aggregating and writing
    // (one per partition: small partitions are not coalesced here). Every task waits 1.5 s, so
    // the kill lands while the second stage runs.
    let driver = Logged::spawn(
        d,
        &[
            "run",
            "job.sql",
            "--target-task-bytes",
            "0",
            "--executors",
            "3",
            "--slots",
            "2",
            "--checkpoint",
            "ckpt",
            "--events",
            "events.jsonl",
        ],
        &[("SLUICE_TEST_TASK_DELAY_MS", "1500")],
    );
    let finished = wait_for_event(
        &d.join("events.jsonl"),
        "stage 0 finished",
        Duration::from_secs(90),
        |e| e["event"] == "stage_finished" && e["stage"] == 0,
    );
    assert_eq!(finished["tasks"], 6, "{finished}");
    let executors = children_of(driver.child.id());
    assert_eq!(executors.len(), 3, "three executor processes");
    let victim = executors[1];
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let (code, err) = driver.finish(Duration::from_secs(90));
    assert_eq!(code, Some(0), "the epoch recovers by lineage: {err}");
    assert!(err.contains("re-running"), "{err}");
    assert!(
        err.contains("restarted it (pid"),
        "the lost executor is replaced: {err}"
    );
    assert_eq!(
        read_rows(&d.join("out/totals")),
        expected(d),
        "each row exactly once"
    );

    let progress: serde_json::Value = sluice::progress::record(&d.join("ckpt"), 0);
    let lost = progress["lost_executors"].as_array().unwrap();
    assert_eq!(lost.len(), 1, "{progress}");
    assert_eq!(lost[0]["pid"].as_u64(), Some(victim as u64));
    let lost_id = lost[0]["id"].as_u64().unwrap();
    let retried = progress["retried_tasks"].as_array().unwrap();
    let mut rerun_maps = 0;
    for task in retried {
        let attempts = task["attempts"].as_array().unwrap();
        let first = &attempts[0];
        let outcome = first["outcome"]["state"].as_str().unwrap();
        if task["stage"] == 0 {
            // A finished map task runs again only because its output died with the victim.
            assert_eq!(outcome, "output_lost", "{task}");
            assert_eq!(first["executor"].as_u64(), Some(lost_id), "{task}");
            rerun_maps += 1;
        } else {
            // Second-stage tasks were running: on the victim, or fetching from it.
            assert!(
                outcome == "executor_lost" && first["executor"].as_u64() == Some(lost_id)
                    || outcome == "fetch_failed",
                "{task}"
            );
        }
        let last = attempts.last().unwrap();
        assert_eq!(last["outcome"]["state"], "succeeded", "{task}");
        assert_ne!(last["executor"].as_u64(), Some(lost_id), "{task}");
    }
    // The victim ran two of the six map tasks; the other four are not re-run.
    assert_eq!(rerun_maps, 2, "{progress}");
    let attempts = progress["task_attempts"].as_u64().unwrap() as usize;
    assert_eq!(
        attempts,
        12 + retried
            .iter()
            .map(|t| t["attempts"].as_array().unwrap().len() - 1)
            .sum::<usize>()
    );
    assert!(
        eventually(Duration::from_secs(10), || executors
            .iter()
            .all(|p| !alive(*p))),
        "no orphaned executor"
    );
}

#[test]
fn killing_the_driver_takes_its_executors_down() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);
    group_by_job(d);
    let (mut driver, executors) = slow_job(d, "20000");
    driver.child.kill().unwrap(); // SIGKILL: no cleanup code runs in the driver
    driver.child.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || executors
            .iter()
            .all(|p| !alive(*p))),
        "executors notice the lost driver and exit"
    );
}

#[test]
fn ctrl_c_stops_the_job_commits_nothing_and_stops_executors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);
    group_by_job(d);
    let (driver, executors) = slow_job(d, "20000");
    unsafe { libc::kill(driver.child.id() as i32, libc::SIGINT) };
    let (code, err) = driver.finish(Duration::from_secs(20));
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(eventually(Duration::from_secs(10), || executors
        .iter()
        .all(|p| !alive(*p))));
    assert!(all_files(&d.join("out")).is_empty());
}

#[test]
fn standalone_executors_outlive_a_killed_driver_and_rejoin_the_restarted_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);
    group_by_job(d);
    ok(&sluice(d, &["cluster", "init", "cluster"]));
    let listen = format!("127.0.0.1:{}", free_port());
    let first = standalone_driver(d, &listen, &["--events", "events.jsonl"]);
    // Slow tasks, so the driver dies mid-epoch.
    let executors = standalone_executors(d, &listen, &[("SLUICE_TEST_TASK_DELAY_MS", "1500")]);
    wait_for_event(
        &d.join("events.jsonl"),
        "epoch_started",
        Duration::from_secs(60),
        |e| e["event"] == "epoch_started" && e["epoch"] == 0,
    );
    let mut first = first;
    first.child.kill().unwrap(); // SIGKILL
    let _ = first.child.wait();
    for e in &executors {
        e.wait_for(
            "waiting up to 600s for the driver to return",
            Duration::from_secs(30),
        );
        assert!(
            alive(e.child.id()),
            "a standalone executor outlives its driver"
        );
    }
    // The same command again: the executors join it and the recorded epoch is re-run.
    let second = standalone_driver(d, &listen, &[]);
    let (code, log) = second.finish(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("re-running epoch with its recorded input"),
        "{log}"
    );
    assert_eq!(read_rows(&d.join("out/totals")), expected(d));
    for e in executors {
        let (code, log) = e.finish(Duration::from_secs(30));
        assert_eq!(code, Some(0), "executor exits cleanly after the job: {log}");
    }
}

#[test]
fn a_restarted_driver_sends_stateful_tasks_back_to_the_standalone_executors_holding_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d); // three bids files: one epoch each
    std::fs::write(
        d.join("job.sql"),
        "CREATE TABLE bids WITH (connector = 'parquet', path = 'data/bids/', stream = 'true', max_files_per_trigger = '1');\n\
         CREATE TABLE totals WITH (connector = 'parquet', path = 'out/totals', output_mode = 'update');\n\
         INSERT INTO totals SELECT auction, count(*) AS n, sum(price) AS total FROM bids GROUP BY auction;\n",
    )
    .unwrap();
    ok(&sluice(d, &["cluster", "init", "cluster"]));
    let listen = format!("127.0.0.1:{}", free_port());
    let driver = |trigger: &str| standalone_driver(d, &listen, &["--trigger", trigger]);
    // A long trigger: the driver is idle after its first epoch, and dies there.
    let mut first = driver("1m");
    let executors = standalone_executors(d, &listen, &[]);
    assert!(
        eventually(Duration::from_secs(60), || d
            .join("ckpt/commits/0")
            .exists()),
        "epoch 0 committed: {}",
        first.stderr.lock().unwrap()
    );
    first.child.kill().unwrap(); // SIGKILL
    let _ = first.child.wait();
    for e in &executors {
        e.wait_for("waiting up to", Duration::from_secs(30));
    }
    // The restarted driver drains the other two files on the same executors.
    let (code, log) = driver("available-now").finish(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{log}");
    let progress = |n: u64| sluice::progress::record(&d.join("ckpt"), n);
    let restored = |n: u64| {
        progress(n)["state"][0]["restored_partitions"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(restored(0), 0, "epoch 0 starts empty");
    assert_eq!(
        restored(1),
        0,
        "the new driver's first epoch reuses the state the executors hold: {}",
        progress(1)
    );
    assert!(progress(1)["state"][0]["rows_total"].as_u64().unwrap() > 0);
    // Update mode: the latest row per auction equals the batch answer over all files.
    let mut latest = std::collections::BTreeMap::new();
    for row in read_rows(&d.join("out/totals")) {
        let n: u64 = row[1].parse().unwrap();
        let e = latest
            .entry(row[0].clone())
            .or_insert((0u64, String::new()));
        if n >= e.0 {
            *e = (n, row[2].clone());
        }
    }
    let want = reference(
        d,
        "SELECT auction, count(*) AS n, sum(price) AS total FROM bids GROUP BY auction",
    );
    let mut got: Vec<Vec<String>> = latest
        .into_iter()
        .map(|(a, (n, t))| vec![a, n.to_string(), t])
        .collect();
    got.sort();
    assert_eq!(got, want);
    for e in executors {
        let (code, log) = e.finish(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{log}");
    }
}
