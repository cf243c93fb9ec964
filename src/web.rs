//! The web UI's test kit: plain HTTP requests to a UI on loopback, and scripts that drive a
//! real headless browser (Debian's `chromium-headless-shell` through npm's `playwright-core`,
//! both installed on first use by `scripts/install-browser.sh`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

/// An HTTP response: status code and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `METHOD http://HOST:PORT/PATH` over HTTP/1.1 with `headers`, read to the end.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Response {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream =
        TcpStream::connect(host).unwrap_or_else(|e| panic!("connecting to {host}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Response { status, body }
}

/// `GET url`.
pub fn get(url: &str) -> Response {
    request("GET", url, &[])
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The directory holding `node_modules/playwright-core` (installed on first use).
pub fn browser_tools() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(crate::repo_root().join("scripts/install-browser.sh"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running scripts/install-browser.sh");
        assert!(out.status.success(), "installing the browser failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// Runs `body`, the body of an async JavaScript function given `browser` (a launched headless
/// Chromium) and `args` (the strings passed here), with node; returns what it prints. The
/// browser is closed afterwards, whatever happened.
pub fn run_browser_script(body: &str, args: &[&str]) -> String {
    let dir = browser_tools();
    let script = format!(
        r#"const {{ chromium }} = require({module:?});
(async () => {{
  const args = process.argv.slice(2);
  const browser = await chromium.launch({{
    executablePath: "/usr/bin/chromium-headless-shell",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  }});
  try {{
{body}
  }} finally {{
    await browser.close();
  }}
}})().catch((e) => {{ console.error(e && e.stack || e); process.exit(1); }});
"#,
        module = dir
            .join("node_modules/playwright-core")
            .display()
            .to_string()
    );
    let file = tempfile::Builder::new()
        .suffix(".js")
        .tempfile()
        .expect("a script file");
    std::fs::write(file.path(), script).unwrap();
    let out = std::process::Command::new("node")
        .arg(file.path())
        .args(args)
        .output()
        .expect("running node");
    assert!(
        out.status.success(),
        "the browser script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
