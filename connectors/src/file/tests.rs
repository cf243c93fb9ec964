use super::*;
use arrow::array::Array;
use arrow::datatypes::{DataType, Field};
use std::io::Write;

fn spec(format: FileFormat, path: &Path) -> FileSourceSpec {
    FileSourceSpec {
        table: "t".into(),
        format,
        path: path.to_string_lossy().into_owned(),
        csv_header: true,
        csv_delimiter: b',',
        partition_columns: Vec::new(),
        stream: false,
        max_files_per_trigger: None,
        storage: Vec::new(),
    }
}

#[test]
fn a_streamed_table_reads_new_files_in_name_order_and_refuses_out_of_order_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(FileFormat::Json, dir.path());
    spec.stream = true;
    spec.max_files_per_trigger = Some(2);
    let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
    let source = FileSource::declared(spec, schema).unwrap();
    assert!(!source.bounded());
    let plan = |previous: Option<&SourceEpoch>, respect_limit: bool| {
        source.plan_epoch(&PlanRequest {
            previous,
            respect_limit,
            until: None,
            rescan: false,
        })
    };
    let names = |e: &SourceEpoch| -> Vec<String> {
        e.splits
            .iter()
            .map(|s| match s {
                Split::File(f) => Path::new(&f.path)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let write = |name: &str| std::fs::write(dir.path().join(name), "{\"a\": 1}\n").unwrap();
    // Empty directory: nothing yet.
    let e0 = plan(None, true).unwrap();
    assert!(e0.splits.is_empty());
    for n in ["f-001.json", "f-002.json", "f-003.json"] {
        write(n);
    }
    let e1 = plan(Some(&e0), true).unwrap();
    assert_eq!(
        names(&e1),
        ["f-001.json", "f-002.json"],
        "at most 2 per trigger"
    );
    let e2 = plan(Some(&e1), true).unwrap();
    assert_eq!(names(&e2), ["f-003.json"]);
    let e3 = plan(Some(&e2), true).unwrap();
    assert!(e3.splits.is_empty());
    assert_eq!(e3.files, e2.files);
    write("f-004.json");
    write("f-005.json");
    write("f-006.json");
    // --trigger once ignores the per-trigger limit.
    assert_eq!(names(&plan(Some(&e3), false).unwrap()).len(), 3);
    // A file sorting before one already read is an error naming it.
    write("f-0025.json");
    let err = plan(Some(&e3), true).unwrap_err().to_string();
    assert!(
        err.contains("f-0025.json") && err.contains("name order"),
        "{err}"
    );
    // A missing directory is an error, not an empty stream.
    let mut missing = source.spec().clone();
    missing.path = dir.path().join("nope").to_string_lossy().into_owned();
    assert!(FileSource::declared(missing, source.schema()).is_err());
}

fn ctx() -> ReadContext {
    ReadContext {
        query_id: sluice_checkpoint::QueryId::new("q").unwrap(),
        epoch: sluice_checkpoint::Epoch(0),
    }
}

fn drain(source: &FileSource) -> Result<usize> {
    let mut rows = 0;
    for split in source.plan_splits()? {
        let mut r = source.open(&split, None, &ctx())?;
        while let Some(b) = r.next_batch()? {
            rows += b.num_rows();
        }
    }
    Ok(rows)
}

#[test]
fn malformed_json_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.json");
    let mut f = File::create(&p).unwrap();
    writeln!(
        f,
        "{{\"a\": 1}}\n{{\"a\": 2}}\n{{\"a\": \"x\"}}\n{{\"a\": 4}}"
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
    let source = FileSource::new(spec(FileFormat::Json, dir.path()), schema);
    let err = drain(&source).unwrap_err().to_string();
    assert!(err.contains("a.json:3"), "{err}");
}

#[test]
fn truncated_json_line_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.json");
    std::fs::write(&p, "{\"a\": 1}\n{\"a\": 2\n{\"a\": 3}\n").unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
    let source = FileSource::new(spec(FileFormat::Json, dir.path()), schema);
    let err = drain(&source).unwrap_err().to_string();
    assert!(err.contains("a.json:2"), "{err}");
}

#[test]
fn malformed_csv_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.csv");
    std::fs::write(&p, "a,b\n1,x\n2,y\nthree,z\n").unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Utf8, true),
    ]));
    let source = FileSource::new(spec(FileFormat::Csv, dir.path()), schema);
    let err = drain(&source).unwrap_err().to_string();
    assert!(err.contains("a.csv:4"), "{err}");
}

#[test]
fn json_rows_are_all_read_and_schema_inferred() {
    let dir = tempfile::tempdir().unwrap();
    let body: String = (0..20_000)
        .map(|i| format!("{{\"a\": {i}, \"b\": \"s{i}\"}}\n"))
        .collect();
    std::fs::write(dir.path().join("x.jsonl"), body).unwrap();
    let source = FileSource::infer(spec(FileFormat::Json, dir.path())).unwrap();
    assert_eq!(source.schema().fields().len(), 2);
    assert_eq!(drain(&source).unwrap(), 20_000);
}

#[test]
fn hive_directories_become_columns() {
    let dir = tempfile::tempdir().unwrap();
    for (part, rows) in [
        ("c=a%2Fb", "{\"x\": 1}\n{\"x\": 2}\n"),
        ("c=__HIVE_DEFAULT_PARTITION__", "{\"x\": 3}\n"),
    ] {
        std::fs::create_dir_all(dir.path().join(part)).unwrap();
        std::fs::write(dir.path().join(part).join("f.json"), rows).unwrap();
    }
    let source = FileSource::infer(spec(FileFormat::Json, dir.path())).unwrap();
    assert_eq!(source.schema().field(1).name(), "c");
    let mut seen = vec![];
    for split in source.plan_splits().unwrap() {
        // Project the partition column alone, then both.
        for projection in [vec![1], vec![1, 0]] {
            let mut r = source.open(&split, Some(&projection), &ctx()).unwrap();
            while let Some(b) = r.next_batch().unwrap() {
                let c = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                seen.extend((0..b.num_rows()).map(|i| {
                    (
                        projection.len(),
                        c.is_valid(i).then(|| c.value(i).to_string()),
                    )
                }));
            }
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (1, None),
            (1, Some("a/b".into())),
            (1, Some("a/b".into())),
            (2, None),
            (2, Some("a/b".into())),
            (2, Some("a/b".into()))
        ]
    );
}

#[test]
fn missing_path_is_named() {
    let err =
        FileSource::infer(spec(FileFormat::Parquet, Path::new("/nonexistent/x"))).unwrap_err();
    assert!(
        err.to_string().contains("'/nonexistent/x' does not exist"),
        "{err}"
    );
}
