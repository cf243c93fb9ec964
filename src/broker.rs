//! A real Kafka-protocol broker (tansu) on loopback, for tests, examples and benchmarks.
//!
//! [`Broker::start`] installs tansu through `scripts/install-broker.sh` when it is missing (so
//! tests never skip), starts it on a free port and stops it when dropped. Quirks of this broker
//! that tests design around (never the engine): topics must be created first, and its high
//! watermark is the base offset of the last record batch + 1, and a fetch from an offset inside a
//! batch starts at the *next* batch — so [`Producer`] sends one record per batch (a real Kafka
//! broker needs neither). A third: its in-memory storage answers a fetch only once a pass over
//! the partition finds no new record or the request's `fetch.max.bytes` (capped at 5 MB) is
//! filled, and each pass lists the whole partition — so near the head of a partition that is
//! being written without pause, a consumer with the default limits can wait minutes for its
//! first record. Sources that read while a test produces add [`CONCURRENT_READ_OPTIONS`].

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::ClientContext;

/// Kafka source DDL options (to append after the last option) that keep tansu's fetch answers
/// small, so that reading near the head of a partition being written returns within seconds
/// (see the module docs). `message.max.bytes` goes along because librdkafka raises
/// `fetch.max.bytes` to at least it.
pub const CONCURRENT_READ_OPTIONS: &str =
    r#", "properties.fetch.max.bytes" = '131072', "properties.message.max.bytes" = '131072'"#;

/// The tansu binary: `$SLUICE_TANSU`, or installed into the tool cache on first use.
pub fn tansu_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(find_or_install).clone()
}

fn find_or_install() -> PathBuf {
    if let Some(bin) = std::env::var_os("SLUICE_TANSU") {
        return PathBuf::from(bin);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/install-broker.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/install-broker.sh");
    assert!(out.status.success(), "installing the broker failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A running broker; killed when dropped.
pub struct Broker {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    storage: String,
    dir: tempfile::TempDir,
}

impl Broker {
    /// A broker keeping records in memory.
    pub fn start() -> Broker {
        Self::start_with("memory://tansu/")
    }

    /// A broker keeping records in a SQLite file in its own directory (survives restarts).
    pub fn start_durable() -> Broker {
        Self::start_with("sqlite://tansu.db")
    }

    fn start_with(storage: &str) -> Broker {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut broker = Broker {
            child: None,
            port,
            storage: storage.to_string(),
            dir: tempfile::tempdir().expect("a temp dir"),
        };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("tansu.log")).expect("log file");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage])
            .current_dir(self.dir.path())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the broker did not start; log: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the broker and starts it again on the same port (memory storage starts empty).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Adds partitions to `topic` so that it has `partitions` in all. This broker has no
    /// CreatePartitions API, so the broker is stopped, its SQLite store (see
    /// [`Broker::start_durable`]) edited as its own topic creation would have written it, and
    /// the broker started again on the same port.
    pub fn add_partitions(&mut self, topic: &str, partitions: u32) {
        assert!(
            self.storage.starts_with("sqlite://"),
            "needs a durable broker"
        );
        self.stop();
        let script = format!(
            r#"
import sqlite3, sys
db = sqlite3.connect("tansu.db")
(tid, have) = db.execute("select id, partitions from topic where name = ?", ("{topic}",)).fetchone()
for p in range(have, {partitions}):
    db.execute("insert into topition (topic, partition) values (?, ?)", (tid, p))
    tp = db.execute("select id from topition where topic = ? and partition = ?", (tid, p)).fetchone()[0]
    db.execute("insert into watermark (topition) values (?)", (tp,))
db.execute("update topic set partitions = ? where id = ?", ({partitions}, tid))
db.commit()
"#
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .current_dir(self.dir.path())
            .output()
            .expect("running python3");
        assert!(
            out.status.success(),
            "adding partitions: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.launch();
    }

    /// `bootstrap_servers` for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(tansu_binary())
            .args([
                "topic",
                "create",
                topic,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .output()
            .expect("running tansu topic create");
        assert!(
            out.status.success(),
            "creating topic {topic}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A producer to this broker.
    pub fn producer(&self) -> Producer {
        Producer::connect(&self.bootstrap())
    }

    /// Every record of `topic`'s `partitions` partitions, from the start, in each partition's
    /// offset order: `(partition, key, value)`. Reads until nothing arrives for `quiet` (this
    /// broker's high watermark can trail the last batch, so it is not the stop condition).
    pub fn read_topic(
        &self,
        topic: &str,
        partitions: i32,
        quiet: Duration,
    ) -> Vec<(i32, Option<Vec<u8>>, Vec<u8>)> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::Message;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", "sluice-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("creating a consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
                .expect("adding a partition");
        }
        consumer.assign(&tpl).expect("assigning partitions");
        let mut out = Vec::new();
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    out.push((
                        m.partition(),
                        m.key().map(<[u8]>::to_vec),
                        m.payload().unwrap_or_default().to_vec(),
                    ));
                    last = Instant::now();
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counts deliveries the broker did not acknowledge.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first_error
                .lock()
                .unwrap()
                .get_or_insert_with(|| e.to_string());
        }
    }
}

/// Sends records with the bundled librdkafka: idempotent (no duplicates from retries), and
/// every record is checked to be acknowledged.
pub struct Producer {
    inner: BaseProducer<Deliveries>,
}

impl Producer {
    /// A producer to `bootstrap` sending one record per batch (see the module docs).
    pub fn connect(bootstrap: &str) -> Self {
        Self::with_batch(bootstrap, 1)
    }

    /// A producer batching up to 10 000 records, for bulk loads that are only ever read from
    /// batch boundaries on (one `--trigger once` epoch from the earliest offset): much faster.
    pub fn connect_bulk(bootstrap: &str) -> Self {
        Self::with_batch(bootstrap, 10_000)
    }

    fn with_batch(bootstrap: &str, batch: usize) -> Self {
        let inner = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "2")
            .set("batch.num.messages", batch.to_string())
            .set("queue.buffering.max.messages", "200000")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "600000")
            .create_with_context(Deliveries::default())
            .expect("creating a producer");
        Self { inner }
    }

    /// Sends `(partition, key, value)` records and waits for them all; then one record more
    /// per partition that gets one of `last` alone (see the module docs).
    pub fn send_all(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = (i32, Vec<u8>, Vec<u8>)>,
        last: impl IntoIterator<Item = (i32, Vec<u8>, Vec<u8>)>,
    ) {
        for (partition, key, value) in records {
            self.send_one(topic, partition, &key, &value);
        }
        self.flush();
        for (partition, key, value) in last {
            self.send_one(topic, partition, &key, &value);
            self.flush();
        }
    }

    /// Queues one record (waits while the local queue is full).
    pub fn send_one(&self, topic: &str, partition: i32, key: &[u8], value: &[u8]) {
        let mut record = BaseRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(value);
        loop {
            match self.inner.send(record) {
                Ok(()) => return,
                Err((e, r)) => {
                    assert!(
                        matches!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "producing to {topic}: {e}"
                    );
                    record = r;
                    self.inner.poll(Duration::from_millis(10));
                }
            }
        }
    }

    /// Waits until everything queued is acknowledged; panics if the broker refused any record.
    pub fn flush(&self) {
        self.inner
            .flush(Duration::from_secs(600))
            .expect("flushing the producer");
        let context = self.inner.context();
        let failed = context.failed.load(Ordering::Relaxed);
        assert!(
            failed == 0,
            "{failed} records were not acknowledged by the broker: {:?}",
            context.first_error.lock().unwrap()
        );
    }
}
