//! A real Kafka-protocol broker (tansu) on loopback, for tests, examples and benchmarks.
//!
//! [`Broker::start`] installs tansu through `scripts/install-broker.sh` when it is missing (so
//! tests never skip), starts it on a free port and stops it when dropped. Records are kept in
//! tansu's SQLite storage, which serves a fetch that starts inside a multi-record batch from the
//! requested offset, as Kafka does; [`Producer`] batches as ordinary producers do (`linger.ms`,
//! batches of thousands of records), so tests read the data real pipelines read.
//!
//! Quirks of this broker that tests design around (never the engine): topics must be created
//! first (no auto-creation), and it has no CreatePartitions API ([`Broker::add_partitions`]
//! edits its store). Its in-memory storage (`memory://`) drops the first record of a fetch that
//! starts inside a multi-record batch: [`Broker::start_dropping`] starts it on purpose, as a
//! broker known to lose records, to prove that the engine notices.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::ClientContext;

/// The tansu binary: `$SLUICE_TANSU`, or installed into the tool cache on first use.
pub fn tansu_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(find_or_install).clone()
}

fn find_or_install() -> PathBuf {
    if let Some(bin) = std::env::var_os("SLUICE_TANSU") {
        return PathBuf::from(bin);
    }
    let root = crate::repo_root();
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
    /// A broker keeping records in a SQLite file in its own directory (survives restarts).
    pub fn start() -> Broker {
        Self::start_with("sqlite://tansu.db")
    }

    /// A broker known to lose records: tansu's in-memory storage, which drops the first record
    /// of every fetch that starts inside a multi-record batch. For tests that prove loss is
    /// noticed.
    pub fn start_dropping() -> Broker {
        Self::start_with("memory://tansu/")
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

    /// Stops the broker and starts it again on the same port (SQLite storage keeps its
    /// records; memory storage starts empty).
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
    /// CreatePartitions API, so the broker is stopped, its SQLite store edited as its own topic
    /// creation would have written it, and the broker started again on the same port.
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
        self.store_script("adding partitions", &script);
        self.launch();
    }

    /// Deletes the records at `offsets` of `topic`'s `partition` from the broker's SQLite
    /// store, as a faulty broker loses them. The broker is stopped meanwhile and started again
    /// on the same port.
    pub fn delete_records(&mut self, topic: &str, partition: i32, offsets: &[i64]) {
        assert!(
            self.storage.starts_with("sqlite://"),
            "needs the SQLite storage"
        );
        self.stop();
        let list: Vec<String> = offsets.iter().map(i64::to_string).collect();
        let script = format!(
            r#"
import sqlite3
db = sqlite3.connect("tansu.db")
(tp,) = db.execute("select tp.id from topition tp join topic t on tp.topic = t.id where t.name = ? and tp.partition = ?", ("{topic}", {partition})).fetchone()
offsets = [{list}]
for o in offsets:
    db.execute("delete from header where topition = ? and offset_id = ?", (tp, o))
    n = db.execute("delete from record where topition = ? and offset_id = ?", (tp, o)).rowcount
    assert n == 1, f"no record at offset {{o}}"
db.commit()
"#,
            list = list.join(",")
        );
        self.store_script("deleting records", &script);
        self.launch();
    }

    /// Waits (up to a minute) until `topic`'s `partition` holds `count` records in the broker's
    /// SQLite store — for instance once its log cleaner compacted a topic.
    pub fn wait_for_record_count(&self, topic: &str, partition: i32, count: usize) {
        let script = format!(
            r#"
import sqlite3
db = sqlite3.connect("file:tansu.db?mode=ro", uri=True, timeout=10)
print(db.execute("select count(*) from record r join topition tp on r.topition = tp.id join topic t on tp.topic = t.id where t.name = ? and tp.partition = ?", ("{topic}", {partition})).fetchone()[0])
"#
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let have = self
                .store_script("counting records", &script)
                .trim()
                .parse::<usize>()
                .ok();
            if have == Some(count) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{topic}/{partition} holds {have:?} records, not {count}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs a Python script with the broker's directory (its SQLite store, `tansu.db`) as the
    /// working directory; returns what it printed. Panics, naming `what`, if it fails.
    fn store_script(&self, what: &str, script: &str) -> String {
        let out = Command::new("python3")
            .args(["-c", script])
            .current_dir(self.dir.path())
            .output()
            .expect("running python3");
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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
        self.create_topic_with(topic, partitions, &[]);
    }

    /// Deletes `topic` with its records (a later [`Broker::create_topic`] recreates it empty).
    pub fn delete_topic(&self, topic: &str) {
        let out = Command::new(tansu_binary())
            .args(["topic", "delete", topic])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .output()
            .expect("running tansu topic delete");
        assert!(
            out.status.success(),
            "deleting topic {topic}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates `topic` with `partitions` partitions and topic configs such as
    /// `("cleanup.policy", "compact")`.
    pub fn create_topic_with(&self, topic: &str, partitions: u32, configs: &[(&str, &str)]) {
        let configs: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let out = Command::new(tansu_binary())
            .args([
                "topic",
                "create",
                topic,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(configs.iter().flat_map(|c| ["--config", c.as_str()]))
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

/// Sends records with the bundled librdkafka as an ordinary producer does: records linger
/// 5 ms and go in batches of up to 10 000; idempotent (no duplicates from retries), and every
/// record is checked to be acknowledged.
pub struct Producer {
    inner: BaseProducer<Deliveries>,
}

impl Producer {
    /// A producer to `bootstrap`.
    pub fn connect(bootstrap: &str) -> Self {
        let inner = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "200000")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "600000")
            .create_with_context(Deliveries::default())
            .expect("creating a producer");
        Self { inner }
    }

    /// Sends `(partition, key, value)` records and waits until the broker acknowledged them all.
    pub fn send_all(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = (i32, Vec<u8>, Vec<u8>)>,
    ) {
        for (partition, key, value) in records {
            self.send_one(topic, partition, &key, &value);
        }
        self.flush();
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
