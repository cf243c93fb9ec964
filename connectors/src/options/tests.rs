use super::*;

fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn parquet_sink_options() {
    let spec = ConnectorSpec::parse(
        "t",
        &opts(&[
            ("connector", "parquet"),
            ("path", "out/"),
            ("partition_by", "a, b"),
        ]),
    )
    .unwrap();
    let ConnectorSpec::Files {
        sink: Some(sink), ..
    } = spec
    else {
        panic!("{spec:?}")
    };
    assert_eq!(sink.partition_by, vec!["a", "b"]);
}

#[test]
fn object_store_options_are_checked_where_the_table_is_defined() {
    let spec = ConnectorSpec::parse(
        "t",
        &opts(&[
            ("connector", "parquet"),
            ("path", "s3://lake/t/"),
            ("aws_endpoint", "http://127.0.0.1:9000"),
            ("aws_allow_http", "true"),
        ]),
    )
    .unwrap();
    let ConnectorSpec::Files { source, sink } = spec else {
        panic!("a file connector")
    };
    assert_eq!(source.storage.len(), 2);
    assert_eq!(sink.unwrap().storage, source.storage);
    let err = ConnectorSpec::parse(
        "t",
        &opts(&[
            ("connector", "csv"),
            ("path", "s3://lake/t/"),
            ("aws_colour", "red"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("table 't'") && err.contains("unknown object-store option 'aws_colour'"),
        "{err}"
    );
    let err = ConnectorSpec::parse(
        "t",
        &opts(&[
            ("connector", "json"),
            ("path", "data/t/"),
            ("aws_region", "x"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("'aws_region' applies to an s3:// path only"),
        "{err}"
    );
}

#[test]
fn unknown_connector_and_option_are_named() {
    let err = ConnectorSpec::parse("t", &opts(&[("connector", "kafkaa")])).unwrap_err();
    assert!(
        err.to_string().contains("unknown connector 'kafkaa'"),
        "{err}"
    );
    let err = ConnectorSpec::parse(
        "t",
        &opts(&[("connector", "csv"), ("path", "x"), ("pth", "y")]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown option 'pth'"), "{err}");
    let err = ConnectorSpec::parse("t", &opts(&[("connector", "csv")])).unwrap_err();
    assert!(err.to_string().contains("needs option 'path'"), "{err}");
}

#[test]
fn kafka_options() {
    let base = [
        ("connector", "kafka"),
        ("bootstrap_servers", "127.0.0.1:9092"),
        ("topic", "events"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut o = opts(&base);
        o.extend(opts(extra));
        ConnectorSpec::parse("events", &o)
    };
    let ConnectorSpec::Kafka { source: spec, sink } = with(&[
        ("start", "offsets"),
        ("start_offsets", "0:5, 3:7"),
        ("max_records_per_trigger", "500000"),
        ("properties.fetch.max.bytes", "1000000"),
    ])
    .unwrap() else {
        panic!()
    };
    assert_eq!(spec.start, StartPosition::Offsets([(0, 5), (3, 7)].into()));
    assert_eq!(spec.max_records_per_trigger, Some(500_000));
    assert_eq!(spec.properties["fetch.max.bytes"], "1000000");
    assert!(!spec.transactional);
    assert_eq!((sink.topic.as_str(), sink.key.as_ref()), ("events", None));
    assert!(matches!(
        with(&[("key", "a, b")]).unwrap(),
        ConnectorSpec::Kafka { sink, .. } if sink.key == Some(vec!["a".into(), "b".into()])
    ));
    assert!(matches!(
        with(&[("transactional", "TRUE")]).unwrap(),
        ConnectorSpec::Kafka { source, .. } if source.transactional
    ));
    for (extra, expect) in [
        (
            vec![("on_bad_record", "dead_letter")],
            "needs option 'dead_letter_path'",
        ),
        (
            vec![("start", "offsets"), ("start_offsets", "zero:1")],
            "PARTITION:OFFSET",
        ),
        (vec![("max_records_per_trigger", "-1")], "must be positive"),
        (vec![("on_offsets_lost", "dead_letter")], "'fail' or 'skip'"),
        (vec![("format", "avro")], "'json' or 'raw'"),
        (vec![("transactional", "yes")], "'true' or 'false'"),
    ] {
        let err = with(&extra).unwrap_err().to_string();
        assert!(err.contains(expect), "{extra:?}: {err}");
    }
}
