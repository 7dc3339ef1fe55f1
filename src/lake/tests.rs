use super::*;
use crate::convert::{Converter, SystemValues};
use crate::model::{ColType, Op, Record, TableSchema};
use arrow::array::{Array, AsArray, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    PutMultipartOptions, PutOptions, PutResult, UploadPart,
};
use parquet::arrow::ProjectionMask;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

fn records(n: i64) -> Vec<Record> {
    (1..=n)
        .map(|id| {
            let v = json!({
                "b": id % 2 == 0,
                "i": id * 1000,
                "f": id as f64 / 3.0,
                "s": format!("subject {id} 😀 中文"),
                "j": {"k": [id, "x"]},
            });
            let serde_json::Value::Object(fields) = v else {
                unreachable!()
            };
            Record {
                id,
                updated: id,
                fields,
            }
        })
        .collect()
}

fn sample_batch(n: i64) -> RecordBatch {
    let mut conv = Converter::new(TableSchema::default());
    let sys = SystemValues {
        run_id: "run-a".into(),
        synced_at_micros: 1_700_000_000_123_456,
        op: Op::Upsert,
    };
    let (batch, _) = conv.convert(&records(n), &sys).unwrap();
    batch
}

fn memory_lake() -> Lake {
    Lake::open("memory://", &[], std::path::Path::new("/")).unwrap()
}

#[path = "../../tests/it/s3.rs"]
mod s3_server;

/// Every backend the conformance checks run against: memory, a local folder, and a real
/// S3-protocol server (s3s-fs on 127.0.0.1:0, signed requests) through `Lake::open`.
struct Backends {
    lakes: Vec<Lake>,
    dir: tempfile::TempDir,
    s3: s3_server::S3Server,
}

fn backends() -> Backends {
    let dir = tempfile::tempdir().unwrap();
    let s3 = s3_server::S3Server::start(&["lake"]);
    let local = Lake::open("file://./lake", &[], dir.path()).unwrap();
    let remote = Lake::open("s3://lake/pre/fix", &s3.options(), dir.path()).unwrap();
    Backends {
        lakes: vec![memory_lake(), local, remote],
        dir,
        s3,
    }
}

/// S3 refuses parts under 5 MiB (all but the last), so multipart checks use that size everywhere.
const PART: usize = 5 * 1024 * 1024;

#[tokio::test]
async fn round_trip_keeps_every_column_type_on_every_backend() {
    let b = backends();
    let batch = sample_batch(100);
    // Every ColType is present: bool, int64, float64, utf8, json, timestamp_utc.
    let types: std::collections::HashSet<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.metadata()[crate::convert::COLTYPE_METADATA_KEY].clone())
        .collect();
    for t in ["bool", "int64", "float64", "utf8", "json", "timestamp_utc"] {
        assert!(types.contains(t), "{t} missing from {types:?}");
    }
    for lake in &b.lakes {
        let key = Lake::data_key(
            "tickets",
            chrono::NaiveDate::from_ymd_opt(2026, 1, 2).unwrap(),
            "run-a",
            1,
        );
        assert_eq!(key, "tickets/synced_date=2026-01-02/run-a-00001.parquet");
        let written = lake
            .write_parquet(&key, batch.schema(), std::slice::from_ref(&batch))
            .await
            .unwrap();
        assert_eq!(written.rows, 100);
        let listed = lake.list("tickets").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].key.as_str(), listed[0].size),
            (key.as_str(), written.bytes)
        );
        let back = lake.read_parquet(&key).await.unwrap();
        assert_eq!(back.len(), 1);
        // Same names, Arrow types (UTC timestamps included), metadata and values.
        assert_eq!(back[0], batch, "round trip on {}", lake.url());
    }
}

#[tokio::test]
async fn parquet_files_use_zstd_statistics_and_utc_micros() {
    let lake = memory_lake();
    let batch = sample_batch(10);
    lake.write_parquet("t/a.parquet", batch.schema(), std::slice::from_ref(&batch))
        .await
        .unwrap();
    let data = lake.get("t/a.parquet").await.unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(data).unwrap();
    let meta = builder.metadata();
    let rg = meta.row_group(0);
    for col in rg.columns() {
        assert!(
            matches!(col.compression(), Compression::ZSTD(_)),
            "{}",
            col.column_path()
        );
        assert!(col.statistics().is_some(), "{}", col.column_path());
    }
    let descr = meta.file_metadata().schema_descr();
    let ts = descr
        .columns()
        .iter()
        .find(|c| c.name() == "_hw_synced_at")
        .unwrap();
    match ts.logical_type_ref() {
        Some(parquet::basic::LogicalType::Timestamp(t)) => {
            assert!(t.is_adjusted_to_u_t_c);
            assert!(matches!(t.unit, parquet::basic::TimeUnit::MICROS));
        }
        other => panic!("_hw_synced_at is {other:?}"),
    }
}

#[tokio::test]
async fn create_if_absent_refuses_an_existing_key_and_keeps_the_object() {
    let b = backends();
    for lake in &b.lakes {
        let first = sample_batch(5);
        lake.write_parquet("s/k.parquet", first.schema(), std::slice::from_ref(&first))
            .await
            .unwrap();
        let before = lake.get("s/k.parquet").await.unwrap();
        let second = sample_batch(7);
        let err = lake
            .write_parquet("s/k.parquet", second.schema(), &[second])
            .await
            .unwrap_err();
        assert!(matches!(err, LakeError::AlreadyExists { .. }), "{err}");
        assert_eq!(lake.get("s/k.parquet").await.unwrap(), before);

        // The multipart path (a part size far below the file size) refuses too.
        let big = sample_batch(20_000);
        let small_parts = Lake::from_store(Arc::clone(&lake.store), lake.base.clone(), "t".into())
            .with_part_size(64 * 1024);
        let err = small_parts
            .write_parquet("s/k.parquet", big.schema(), &[big])
            .await
            .unwrap_err();
        assert!(matches!(err, LakeError::AlreadyExists { .. }), "{err}");
        assert_eq!(lake.get("s/k.parquet").await.unwrap(), before);
    }
}

/// Counts parts and fails the `fail_at`-th `put_part` (1-based) when set.
#[derive(Debug)]
struct Faulty {
    inner: Arc<dyn ObjectStore>,
    fail_at: Option<usize>,
    parts: Arc<AtomicUsize>,
    max_part: Arc<AtomicUsize>,
    aborted: Arc<AtomicBool>,
}

impl Faulty {
    fn new(inner: Arc<dyn ObjectStore>, fail_at: Option<usize>) -> Self {
        Faulty {
            inner,
            fail_at,
            parts: Arc::default(),
            max_part: Arc::default(),
            aborted: Arc::default(),
        }
    }
}

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    fail_at: Option<usize>,
    parts: Arc<AtomicUsize>,
    max_part: Arc<AtomicUsize>,
    aborted: Arc<AtomicBool>,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let n = self.parts.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_part
            .fetch_max(data.content_length(), Ordering::SeqCst);
        if Some(n) == self.fail_at {
            return Box::pin(async move {
                Err(object_store::Error::Generic {
                    store: "faulty",
                    source: format!("injected failure of part {n}").into(),
                })
            });
        }
        self.inner.put_part(data)
    }
    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }
    async fn abort(&mut self) -> object_store::Result<()> {
        self.aborted.store(true, Ordering::SeqCst);
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            inner,
            fail_at: self.fail_at,
            parts: Arc::clone(&self.parts),
            max_part: Arc::clone(&self.max_part),
            aborted: Arc::clone(&self.aborted),
        }))
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A batch whose Parquet encoding is large and poorly compressible (distinct strings).
fn wide_batch(rows: usize, offset: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
    ]));
    let ids = Int64Array::from_iter_values((offset..offset + rows).map(|i| i as i64));
    let s = StringArray::from_iter_values((offset..offset + rows).map(|i| {
        let h = xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
        format!("{h:016x}{:016x}", h.rotate_left(17))
    }));
    RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(s)]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_goes_multipart_in_bounded_parts_and_reads_back() {
    let b = backends();
    let batches: Vec<RecordBatch> = (0..120).map(|i| wide_batch(10_000, i * 10_000)).collect();
    for lake in &b.lakes {
        let faulty = Arc::new(Faulty::new(Arc::clone(&lake.store), None));
        let counted = Lake::from_store(faulty.clone(), lake.base.clone(), lake.url.clone())
            .with_part_size(PART);
        let written = counted
            .write_parquet("big/x.parquet", batches[0].schema(), &batches)
            .await
            .unwrap();
        assert_eq!(written.rows, 1_200_000);
        let parts = faulty.parts.load(Ordering::SeqCst);
        assert!(
            parts >= 3,
            "{}: expected a multipart upload, got {parts} parts",
            lake.url()
        );
        // Each part is one part size (the last may be smaller): the writer never holds the file.
        assert!(
            faulty.max_part.load(Ordering::SeqCst) <= PART,
            "{}",
            lake.url()
        );
        let listed = lake.list("big").await.unwrap();
        assert_eq!(listed.len(), 1, "{}", lake.url());
        assert_eq!(listed[0].size, written.bytes, "{}", lake.url());
        let back = lake.read_parquet("big/x.parquet").await.unwrap();
        let ids: Vec<i64> = back
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(ids, (0..1_200_000).collect::<Vec<i64>>(), "{}", lake.url());
        let data = lake.get("big/x.parquet").await.unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(data).unwrap();
        assert!(
            builder.metadata().num_row_groups() >= 18,
            "row groups of ≤ 64k rows"
        );
    }
    assert!(
        b.s3.pending_parts().is_empty(),
        "{:?}",
        b.s3.pending_parts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_part_leaves_no_object_and_aborts_the_upload() {
    let b = backends();
    let batches: Vec<RecordBatch> = (0..60).map(|i| wide_batch(10_000, i * 10_000)).collect();
    for lake in &b.lakes {
        let faulty = Arc::new(Faulty::new(Arc::clone(&lake.store), Some(2)));
        let failing = Lake::from_store(faulty.clone(), lake.base.clone(), lake.url.clone())
            .with_part_size(PART);
        let err = failing
            .write_parquet("f/x.parquet", batches[0].schema(), &batches)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert!(
            faulty.aborted.load(Ordering::SeqCst),
            "{}: upload not aborted",
            lake.url()
        );
        assert!(!lake.exists("f/x.parquet").await.unwrap(), "{}", lake.url());
        assert!(lake.list("f").await.unwrap().is_empty(), "{}", lake.url());
        // The same key can be written afterwards: nothing half-written blocks it.
        let again = Lake::from_store(Arc::clone(&lake.store), lake.base.clone(), lake.url.clone())
            .with_part_size(PART);
        again
            .write_parquet("f/x.parquet", batches[0].schema(), &batches[..2])
            .await
            .unwrap();
    }
    // Nothing staged is left behind: no part file in the local folder, no pending upload parts
    // on the S3 server.
    let leftovers: Vec<_> = std::fs::read_dir(b.dir.path().join("lake/f"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(leftovers, vec!["x.parquet".to_string()]);
    assert!(
        b.s3.pending_parts().is_empty(),
        "{:?}",
        b.s3.pending_parts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_rejected_by_the_s3_server_aborts_the_upload() {
    // The failure comes from the server itself (HTTP 403 on the second part), not a wrapper.
    let b = backends();
    let s3 = &b.lakes[2];
    let lake = Lake::from_store(Arc::clone(&s3.store), s3.base.clone(), s3.url.clone())
        .with_part_size(PART);
    let batches: Vec<RecordBatch> = (0..60).map(|i| wide_batch(10_000, i * 10_000)).collect();
    b.s3.fail_part(2);
    let err = lake
        .write_parquet("g/x.parquet", batches[0].schema(), &batches)
        .await
        .unwrap_err();
    assert!(b.s3.parts_seen() >= 2, "the upload reached the second part");
    assert!(
        matches!(
            err,
            LakeError::PermissionDenied { .. } | LakeError::Storage { .. }
        ),
        "{err}"
    );
    b.s3.fail_part(0);
    assert!(!lake.exists("g/x.parquet").await.unwrap());
    assert!(
        b.s3.objects("lake").is_empty(),
        "{:?}",
        b.s3.objects("lake")
    );
    assert!(
        b.s3.pending_parts().is_empty(),
        "{:?}",
        b.s3.pending_parts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_deletes_only_unreferenced_old_data_files() {
    let b = backends();
    let batch = sample_batch(3);
    for lake in &b.lakes {
        for k in ["s/d=1/a.parquet", "s/d=1/b.parquet", "s/d=2/c.parquet"] {
            lake.write_parquet(k, batch.schema(), std::slice::from_ref(&batch))
                .await
                .unwrap();
        }
        lake.put_json("s/_manifests/r.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let keep: std::collections::HashSet<String> = ["s/d=1/b.parquet".to_string()].into();
        // Objects newer than the cut-off are left (a run may still be committing them).
        let long_ago = chrono::Utc::now() - chrono::Duration::hours(1);
        assert!(lake.sweep("s", &keep, long_ago).await.unwrap().is_empty());
        let soon = chrono::Utc::now() + chrono::Duration::seconds(5);
        let deleted = lake.sweep("s", &keep, soon).await.unwrap();
        assert_eq!(
            deleted,
            vec!["s/d=1/a.parquet", "s/d=2/c.parquet"],
            "{}",
            lake.url()
        );
        let left: Vec<String> = lake
            .list("s")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(
            left,
            vec!["s/_manifests/r.json", "s/d=1/b.parquet"],
            "{}",
            lake.url()
        );
        // A sweep repeated finds nothing more.
        assert!(lake.sweep("s", &keep, soon).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn schema_versions_read_together_by_column_name() {
    let lake = memory_lake();
    let sys = SystemValues {
        run_id: "r".into(),
        synced_at_micros: 0,
        op: Op::Upsert,
    };
    let rec = |id: i64, v: serde_json::Value| Record {
        id,
        updated: id,
        fields: v.as_object().unwrap().clone(),
    };
    let mut conv = Converter::new(TableSchema::default());
    let (v1, _) = conv.convert(&[rec(1, json!({"a": 7}))], &sys).unwrap();
    let (v2, changes) = conv
        .convert(&[rec(2, json!({"new": true, "a": "seven"}))], &sys)
        .unwrap();
    assert_eq!(changes.len(), 2);
    lake.write_parquet("t/1.parquet", v1.schema(), &[v1])
        .await
        .unwrap();
    lake.write_parquet("t/2.parquet", v2.schema(), &[v2])
        .await
        .unwrap();

    // Select `id` and `a` by name from each file, whatever their position and type there.
    let mut seen = Vec::new();
    for key in ["t/1.parquet", "t/2.parquet"] {
        let data = lake.get(key).await.unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(data).unwrap();
        let mask = ProjectionMask::columns(builder.parquet_schema(), ["a", "id"]);
        let batches: Vec<RecordBatch> = builder
            .with_projection(mask)
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let b = &batches[0];
        let id = b
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0);
        let a = b.column_by_name("a").unwrap();
        let a = arrow::util::display::array_value_to_string(a, 0).unwrap();
        seen.push((id, a, b.column_by_name("a").unwrap().data_type().clone()));
    }
    assert_eq!(
        seen,
        vec![
            (1, "7".to_string(), DataType::Int64),
            (2, "seven".to_string(), DataType::Utf8)
        ]
    );
    let _ = ColType::Utf8;
}

#[tokio::test]
async fn relative_file_url_resolves_against_base_dir_and_creates_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open("file://./nested/lake", &[], dir.path()).unwrap();
    let root = dir.path().join("nested/lake");
    assert!(root.is_dir());
    assert_eq!(lake.local_root(), Some(root.clone()));
    assert_eq!(lake.url(), format!("file://{}", root.display()));
    let batch = sample_batch(3);
    let key = Lake::data_key(
        "tickets",
        chrono::NaiveDate::from_ymd_opt(2026, 3, 4).unwrap(),
        "r",
        7,
    );
    lake.write_parquet(&key, batch.schema(), &[batch])
        .await
        .unwrap();
    assert!(
        root.join("tickets/synced_date=2026-03-04/r-00007.parquet")
            .is_file()
    );

    let bare = Lake::open("lake2", &[], dir.path()).unwrap();
    assert_eq!(bare.local_root(), Some(dir.path().join("lake2")));
    assert!(memory_lake().local_root().is_none());
}

#[tokio::test]
async fn manifests_overwrite_and_list_delete_exists_work() {
    let b = backends();
    for lake in &b.lakes {
        manifest_checks(lake).await;
    }
}

async fn manifest_checks(lake: &Lake) {
    let key = Lake::manifest_key("tickets", "run-9");
    assert_eq!(key, "tickets/_manifests/run-9.json");
    assert!(!lake.exists(&key).await.unwrap());
    lake.put_json(&key, Bytes::from_static(b"{\"v\":1}"))
        .await
        .unwrap();
    lake.put_json(&key, Bytes::from_static(b"{\"v\":2}"))
        .await
        .unwrap();
    assert_eq!(
        lake.get(&key).await.unwrap(),
        Bytes::from_static(b"{\"v\":2}")
    );
    assert!(lake.exists(&key).await.unwrap());
    assert_eq!(lake.list("tickets/_manifests").await.unwrap().len(), 1);
    assert!(lake.list("other").await.unwrap().is_empty());
    lake.delete(&key).await.unwrap();
    lake.delete(&key).await.unwrap();
    assert!(!lake.exists(&key).await.unwrap());
    let err = lake.read_parquet(&key).await.unwrap_err();
    assert!(matches!(err, LakeError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn cloud_lakes_keep_their_prefix() {
    // Building an S3 store does no I/O, so it works offline; keys land under the prefix.
    let opts = [
        ("aws_endpoint".to_string(), "http://127.0.0.1:9".to_string()),
        ("aws_allow_http".to_string(), "true".to_string()),
        ("aws_region".to_string(), "us-east-1".to_string()),
        ("aws_access_key_id".to_string(), "AKIDEXAMPLE".to_string()),
        (
            "aws_secret_access_key".to_string(),
            "do-not-print".to_string(),
        ),
    ];
    let lake = Lake::open("s3://bucket/pre/fix", &opts, std::path::Path::new("/")).unwrap();
    assert_eq!(lake.url(), "s3://bucket/pre/fix");
    assert_eq!(lake.path("t/a.parquet").as_ref(), "pre/fix/t/a.parquet");
    assert!(lake.local_root().is_none());
    assert!(!format!("{lake:?}").contains("do-not-print"));
}

#[test]
fn option_mistakes_are_reported_before_any_io() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("never-created");
    let opts = [("aws_region".to_string(), "x".to_string())];
    let err = Lake::open(target.to_str().unwrap(), &opts, dir.path()).unwrap_err();
    assert!(matches!(err, LakeError::BadOption { .. }), "{err}");
    assert!(
        !target.exists(),
        "a refused lake must not create its folder"
    );

    let opts = [("aws_no_such_key".to_string(), "x".to_string())];
    let err = Lake::open("s3://bucket/p", &opts, dir.path()).unwrap_err();
    assert!(
        matches!(&err, LakeError::BadOption { key, .. } if key == "aws_no_such_key"),
        "{err}"
    );
    let err = Lake::open("s3://user:pw@bucket/p", &[], dir.path()).unwrap_err();
    assert!(!err.to_string().contains("pw"), "{err}");
}

/// Peak resident memory of this process so far, in MiB.
fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss as f64 / 1024.0
}

/// Not a test: a measurement. `cargo test --lib upload_200mb -- --ignored --nocapture` prints the
/// upload throughput of one ~200 MB lake file to the in-process S3 server and the writer's memory
/// (peak RSS while writing minus the RSS holding the input batches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn upload_200mb_to_the_s3_server() {
    let b = backends();
    let s3 = &b.lakes[2];
    let lake = Lake::from_store(Arc::clone(&s3.store), s3.base.clone(), s3.url.clone());
    let batches: Vec<RecordBatch> = (0..960).map(|i| wide_batch(10_000, i * 10_000)).collect();
    let before = peak_rss_mib();
    let t0 = std::time::Instant::now();
    let w = lake
        .write_parquet("bench/x.parquet", batches[0].schema(), &batches)
        .await
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let mb = w.bytes as f64 / 1e6;
    println!(
        "wrote {mb:.0} MB ({} rows) in {secs:.2} s = {:.1} MB/s (Parquet encoding included); \
         peak RSS {:.0} MiB, {:.0} MiB above the input batches",
        w.rows,
        mb / secs,
        peak_rss_mib(),
        peak_rss_mib() - before
    );
    assert!(w.bytes > 190_000_000, "{} bytes", w.bytes);
}
