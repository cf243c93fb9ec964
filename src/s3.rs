//! A real S3-compatible server on loopback — moto's server, installed into the tool cache by
//! `scripts/install-s3.sh` on first use — and an independent reader of what a bucket holds
//! (pyarrow's `S3FileSystem`, from the reader virtualenv).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The access key the tests use (moto accepts any).
pub const ACCESS_KEY: &str = "sluice-test";
/// The secret key the tests use.
pub const SECRET_KEY: &str = "sluice-test-secret";

/// The server binary, installed on first use.
pub fn server_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new("bash")
            .arg(crate::repo_root().join("scripts/install-s3.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running scripts/install-s3.sh");
        assert!(out.status.success(), "installing the S3 server failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// A running S3 server (objects in its memory); killed when dropped.
pub struct S3Server {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> S3Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir = tempfile::tempdir().expect("a temp dir");
        let log = std::fs::File::create(dir.path().join("s3.log")).expect("log file");
        let child = Command::new(server_binary())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting the S3 server");
        let server = S3Server { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the S3 server did not start; log: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The standard variables that point a client (Sluice, or any AWS SDK) at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("s3.log")).unwrap_or_default()
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) {
        self.python(
            "import boto3, sys\n\
             s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2],\n\
                               aws_secret_access_key=sys.argv[3], region_name='us-east-1')\n\
             s3.create_bucket(Bucket=sys.argv[4])\n",
            &[bucket],
        );
    }

    /// Replaces the object `key` of `bucket` with `body` (as another writer would).
    pub fn put_object(&self, bucket: &str, key: &str, body: &str) {
        self.python(
            "import boto3, sys\n\
             s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2],\n\
                               aws_secret_access_key=sys.argv[3], region_name='us-east-1')\n\
             s3.put_object(Bucket=sys.argv[4], Key=sys.argv[5], Body=sys.argv[6].encode())\n",
            &[bucket, key, body],
        );
    }

    /// Uploads every file below the local directory `dir` to `s3://bucket/prefix/` (keeping
    /// relative paths), as a user's other tools would put data there.
    pub fn upload(&self, dir: &std::path::Path, bucket: &str, prefix: &str) {
        self.python(
            "import boto3, sys, os\n\
             s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2],\n\
                               aws_secret_access_key=sys.argv[3], region_name='us-east-1')\n\
             bucket, prefix, root = sys.argv[4], sys.argv[5], sys.argv[6]\n\
             for d, _, files in os.walk(root):\n\
             \x20   for f in files:\n\
             \x20       p = os.path.join(d, f)\n\
             \x20       s3.upload_file(p, bucket, prefix + '/' + os.path.relpath(p, root))\n",
            &[bucket, prefix.trim_matches('/'), &dir.to_string_lossy()],
        );
    }

    /// Downloads every object under `s3://bucket/prefix/` into the local directory `dir`
    /// (keeping relative keys), to look at a checkpoint's files with the local tools.
    pub fn download(&self, bucket: &str, prefix: &str, dir: &std::path::Path) {
        self.python(
            "import boto3, sys, os\n\
             s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2],\n\
                               aws_secret_access_key=sys.argv[3], region_name='us-east-1')\n\
             bucket, prefix, root = sys.argv[4], sys.argv[5], sys.argv[6]\n\
             for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix + '/'):\n\
             \x20   for o in page.get('Contents', []):\n\
             \x20       p = os.path.join(root, os.path.relpath(o['Key'], prefix))\n\
             \x20       os.makedirs(os.path.dirname(p), exist_ok=True)\n\
             \x20       s3.download_file(bucket, o['Key'], p)\n",
            &[bucket, prefix.trim_matches('/'), &dir.to_string_lossy()],
        );
    }

    /// Every row of the Parquet objects under `s3://bucket/prefix/` (hidden and `_` names
    /// skipped, as readers do), each value rendered with Python's `str`, rows sorted: read with
    /// pyarrow's `S3FileSystem`, independent of Sluice.
    pub fn read_rows(&self, bucket: &str, prefix: &str) -> Vec<Vec<String>> {
        let script = r#"
import sys, json
import pyarrow.fs as pafs, pyarrow.dataset as ds
endpoint, key, secret, bucket, prefix = sys.argv[1:6]
fs = pafs.S3FileSystem(endpoint_override=endpoint.split("://")[1], scheme="http",
                       access_key=key, secret_key=secret, region="us-east-1")
table = ds.dataset(f"{bucket}/{prefix}", format="parquet", filesystem=fs, partitioning="hive").to_table()
rows = [[str(v) for v in row.values()] for row in table.to_pylist()]
json.dump(sorted(rows), sys.stdout)
"#;
        let out = Command::new(crate::table::readers_python())
            .args(["-c", script, &self.endpoint(), ACCESS_KEY, SECRET_KEY])
            .args([bucket, prefix.trim_matches('/')])
            .output()
            .expect("running pyarrow");
        assert!(
            out.status.success(),
            "pyarrow could not read s3://{bucket}/{prefix}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON rows from the reader")
    }

    /// Runs `script` with the server's own Python (boto3 comes with moto), given the endpoint,
    /// keys and `args`.
    fn python(&self, script: &str, args: &[&str]) -> String {
        let python = server_binary().with_file_name("python");
        let out = Command::new(python)
            .arg("-c")
            .arg(script)
            .args([&self.endpoint(), ACCESS_KEY, SECRET_KEY])
            .args(args)
            .output()
            .expect("running python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What a reader finds under `s3://bucket/prefix`, read with pyarrow's `S3FileSystem`
    /// (independent of Sluice): every object's key, and the integer column `column` of every
    /// `*.parquet` object.
    pub fn read(&self, bucket: &str, prefix: &str, column: &str) -> Listing {
        let script = r#"
import sys, json
import pyarrow.fs as pafs, pyarrow.parquet as pq
endpoint, key, secret, bucket, prefix, column = sys.argv[1:7]
fs = pafs.S3FileSystem(endpoint_override=endpoint.split("://")[1], scheme="http",
                       access_key=key, secret_key=secret, region="us-east-1")
infos = fs.get_file_info(pafs.FileSelector(f"{bucket}/{prefix}", recursive=True, allow_not_found=True))
objects = sorted(i.path for i in infos if i.type == pafs.FileType.File)
values = []
for path in objects:
    if path.endswith(".parquet"):
        values += pq.read_table(path, filesystem=fs, columns=[column]).column(column).to_pylist()
json.dump({"objects": objects, "values": values}, sys.stdout)
"#;
        let out = Command::new(crate::table::readers_python())
            .args(["-c", script, &self.endpoint(), ACCESS_KEY, SECRET_KEY])
            .args([bucket, prefix.trim_matches('/'), column])
            .output()
            .expect("running pyarrow");
        assert!(
            out.status.success(),
            "pyarrow could not read s3://{bucket}/{prefix}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let found: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("JSON from the reader");
        Listing {
            objects: found["objects"]
                .as_array()
                .expect("objects")
                .iter()
                .map(|o| o.as_str().expect("a key").to_string())
                .collect(),
            values: found["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|v| v.as_i64().expect("an integer"))
                .collect(),
        }
    }
}

/// What [`S3Server::read`] found.
#[derive(Debug, Clone)]
pub struct Listing {
    /// Every object's `bucket/key`.
    pub objects: Vec<String>,
    /// The column's values over every `*.parquet` object.
    pub values: Vec<i64>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback proxy in front of an [`S3Server`] that answers every `every`-th request itself
/// with `503 Slow Down` — S3's throttling answer — and forwards the others (one request per
/// connection: it asks the server to close after answering). Stopped when dropped.
pub struct FlakyProxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    injected: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FlakyProxy {
    /// Starts a proxy to `server`.
    pub fn start(server: &S3Server, every: u64) -> FlakyProxy {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        let upstream = ("127.0.0.1", server.port);
        let injected = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopping) = (injected.clone(), stop.clone());
        std::thread::spawn(move || {
            let requests = AtomicU64::new(0);
            for client in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let fail = requests.fetch_add(1, Ordering::Relaxed) % every == every - 1;
                if fail {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::spawn(move || {
                    let _ = proxy_one(client, upstream, fail);
                });
            }
        });
        FlakyProxy {
            port,
            injected,
            stop,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests answered with a 503 so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wakes the accepting thread.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Serves one connection: reads the request head, then either answers 503 or forwards the
/// request with `Connection: close` and copies the answer back until the server closes.
fn proxy_one(
    mut client: std::net::TcpStream,
    upstream: (&str, u16),
    fail: bool,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut head = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    if fail {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                    <Message>Please reduce your request rate.</Message></Error>";
        let answer = format!(
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(answer.as_bytes())?;
        return client.shutdown(std::net::Shutdown::Both);
    }
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut request = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            request.push_str(line);
            request.push_str("\r\n");
        }
    }
    request.push_str("Connection: close\r\n\r\n");
    let mut server = std::net::TcpStream::connect(upstream)?;
    server.write_all(request.as_bytes())?;
    server.write_all(&head[end..])?;
    let (mut from_client, mut to_server) = (client.try_clone()?, server.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
    });
    std::io::copy(&mut server, &mut client)?;
    client.shutdown(std::net::Shutdown::Both)
}
