use super::*;
use std::io::{Read, Write};

#[test]
fn paths_and_urls_parse() {
    assert!(
        matches!(Location::parse("data/x").unwrap(), Location::Local(p) if p == Path::new("data/x"))
    );
    assert!(
        matches!(Location::parse("file:///data/x").unwrap(), Location::Local(p) if p == Path::new("/data/x"))
    );
    let Location::Object(root) = Location::parse("s3://bkt/a/b/").unwrap() else {
        panic!("an object location")
    };
    assert_eq!(root.url(), "s3://bkt/a/b");
    assert_eq!(root.base_url(), "s3://bkt");
    assert_eq!(root.path("offsets/3").as_ref(), "a/b/offsets/3");
    assert_eq!(root.child("sinks").url_of("t/1"), "s3://bkt/a/b/sinks/t/1");
    let err = Location::parse("gs://bkt/x").unwrap_err().to_string();
    assert!(
        err.contains("gs://bkt/x") && err.contains("unsupported scheme"),
        "{err}"
    );
    let err = Location::parse_with("s3://bkt/x", &[("aws_colour".into(), "red".into())])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown object-store option 'aws_colour'"),
        "{err}"
    );
}

#[test]
fn conditional_writes_listing_and_copies() {
    let root = ObjectRoot::new(
        Arc::new(object_store::memory::InMemory::new()),
        "memory://test",
        "ck",
    );
    root.put("offsets/1", b"one".to_vec(), PutMode::Create)
        .unwrap();
    let err = root
        .put("offsets/1", b"two".to_vec(), PutMode::Create)
        .unwrap_err();
    assert!(err.is_conflict() && !err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains("memory://test/ck/offsets/1"),
        "{err}"
    );
    let (bytes, version) = root.get("offsets/1").unwrap().unwrap();
    assert_eq!(&bytes[..], b"one");
    root.put(
        "offsets/1",
        b"three".to_vec(),
        PutMode::Update(version.clone().into()),
    )
    .unwrap();
    let stale = root
        .put(
            "offsets/1",
            b"four".to_vec(),
            PutMode::Update(version.into()),
        )
        .unwrap_err();
    assert!(stale.is_conflict(), "{stale}");
    root.put("sinks/t/2", b"x".to_vec(), PutMode::Overwrite)
        .unwrap();
    root.copy("offsets/1", "copy/1").unwrap();
    let mut all: Vec<String> = root.list("").unwrap().into_iter().map(|(p, _)| p).collect();
    all.sort();
    assert_eq!(all, ["copy/1", "offsets/1", "sinks/t/2"]);
    assert_eq!(root.list_names("sinks").unwrap(), ["t"]);
    root.delete("copy/1").unwrap();
    // A writer: one PUT when small, a multipart upload (parts of 16 bytes here) when not;
    // nothing is visible before `finish`.
    use std::io::Write;
    let mut small = ObjectWriter::with_part_size(&root, "w/small", 16);
    small.write_all(b"tiny").unwrap();
    assert!(!root.exists("w/small").unwrap());
    assert_eq!(small.finish().unwrap(), 4);
    let mut large = ObjectWriter::with_part_size(&root, "w/large", 16);
    let data: Vec<u8> = (0..100u8).collect();
    for chunk in data.chunks(7) {
        large.write_all(chunk).unwrap();
    }
    assert!(!root.exists("w/large").unwrap());
    assert_eq!(large.finish().unwrap(), 100);
    assert_eq!(&root.get("w/large").unwrap().unwrap().0[..], &data[..]);
    assert_eq!(&root.get("w/small").unwrap().unwrap().0[..], b"tiny");
    root.delete("copy/1").unwrap();
    assert!(!root.exists("copy/1").unwrap());
    assert!(root.get("missing").unwrap().is_none());
}

/// A stand-in S3 endpoint (a plain HTTP listener) answering `503 Slow Down` to the first
/// `failures` requests and a valid HEAD answer after: object_store retries through the
/// failures and the process counts them.
#[test]
fn transient_failures_are_retried_and_counted() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let failures = 2;
    let server = std::thread::spawn(move || {
        for n in 0..=failures {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let read = conn.read(&mut buf).unwrap();
                assert!(read > 0, "the request ended early");
                request.extend_from_slice(&buf[..read]);
            }
            let answer = if n < failures {
                "HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nETag: \"e1\"\r\n\
                 Last-Modified: Sat, 05 Dec 2026 06:00:00 GMT\r\nConnection: close\r\n\r\n"
            };
            conn.write_all(answer.as_bytes()).unwrap();
        }
    });
    let options = [
        ("aws_endpoint".to_string(), endpoint),
        ("aws_allow_http".to_string(), "true".to_string()),
        ("aws_access_key_id".to_string(), "test".to_string()),
        ("aws_secret_access_key".to_string(), "test".to_string()),
    ];
    let Location::Object(root) = Location::parse_with("s3://retry-test/x", &options).unwrap()
    else {
        panic!("an object location")
    };
    let before = transient_failures();
    assert!(root.exists("obj").unwrap());
    server.join().unwrap();
    assert!(
        transient_failures() - before >= failures,
        "{} counted",
        transient_failures() - before
    );
}
