//! A real S3-protocol server for tests: `s3s-fs` on `127.0.0.1:0`, with access keys so every
//! request's signature is checked, serving a temporary folder (one sub-folder per bucket).
//!
//! It runs on a thread of its own, so it keeps answering while a test blocks on a child process.
//! `fail_part(n)` makes every upload of part number n fail with a non-retryable S3 error (403),
//! as a store that rejects a part would.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "highwater-test-key";
pub const SECRET_KEY: &str = "highwater-test-secret-0123456789";
pub const REGION: &str = "us-east-1";

/// Counts part uploads and fails one of them when asked.
#[derive(Default)]
struct Faults {
    parts_seen: AtomicUsize,
    /// Part number whose uploads fail; 0 = none.
    fail_at: AtomicUsize,
}

pub struct S3Server {
    addr: SocketAddr,
    root: tempfile::TempDir,
    faults: Arc<Faults>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// Starts the server with `buckets` created (empty).
    pub fn start(buckets: &[&str]) -> S3Server {
        let root = tempfile::tempdir().expect("temp dir for the S3 server");
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).unwrap();
        }
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs over the temp dir");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let faults = Arc::new(Faults::default());

        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let f = Arc::clone(&faults);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    let (socket, _) = tokio::select! {
                        r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                        _ = &mut stop_rx => break,
                    };
                    let service = service.clone();
                    let f = Arc::clone(&f);
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let service = service.clone();
                            let f = Arc::clone(&f);
                            async move {
                                if let Some(part) = part_number(&req) {
                                    f.parts_seen.fetch_add(1, Ordering::SeqCst);
                                    let at = f.fail_at.load(Ordering::SeqCst);
                                    if at != 0 && part == at {
                                        // Read the part first: a reply before the body would reach
                                        // the client as a broken connection, which it retries.
                                        let _ =
                                            http_body_util::BodyExt::collect(req.into_body()).await;
                                        return Ok::<_, s3s::HttpError>(denied());
                                    }
                                }
                                hyper::service::Service::call(&service, req).await
                            }
                        },
                    );
                    let conn = http
                        .serve_connection(TokioIo::new(socket), svc)
                        .into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
            });
        });
        let addr = addr_rx.recv().expect("S3 server address");
        S3Server {
            addr,
            root,
            faults,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Folder that holds the buckets' objects (to check what is on "disk").
    pub fn root(&self) -> PathBuf {
        self.root.path().to_path_buf()
    }

    /// `[lake.options]` entries that point object_store at this server.
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("endpoint", self.endpoint()),
            ("region", REGION.to_string()),
            ("access_key_id", ACCESS_KEY.to_string()),
            ("secret_access_key", SECRET_KEY.to_string()),
            ("allow_http", "true".to_string()),
            ("virtual_hosted_style_request", "false".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The same options as a TOML `[lake.options]` table body.
    pub fn options_toml(&self) -> String {
        self.options()
            .iter()
            .map(|(k, v)| format!("{k} = \"{v}\"\n"))
            .collect()
    }

    /// Fail every upload of part number `n` (1-based) from now on; 0 turns it off. Also restarts
    /// the count of part uploads seen.
    pub fn fail_part(&self, n: usize) {
        self.faults.parts_seen.store(0, Ordering::SeqCst);
        self.faults.fail_at.store(n, Ordering::SeqCst);
    }

    pub fn parts_seen(&self) -> usize {
        self.faults.parts_seen.load(Ordering::SeqCst)
    }

    /// Every object file under `bucket` (relative paths), ignoring s3s-fs's own bookkeeping.
    pub fn objects(&self, bucket: &str) -> Vec<String> {
        let base = self.root.path().join(bucket);
        let mut out = Vec::new();
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with(".") {
                    continue;
                }
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(&base).unwrap().to_string_lossy().to_string());
                }
            }
        }
        out.sort();
        out
    }
}

impl S3Server {
    /// Parts of multipart uploads that were neither completed nor aborted.
    pub fn pending_parts(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.root.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".upload_id-"))
            .collect();
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The part number of a multipart part upload (`PUT …?partNumber=N&uploadId=…`).
fn part_number(req: &http::Request<hyper::body::Incoming>) -> Option<usize> {
    if req.method() != http::Method::PUT {
        return None;
    }
    let q = req.uri().query()?;
    if !q.contains("uploadId=") {
        return None;
    }
    q.split('&')
        .find_map(|kv| kv.strip_prefix("partNumber="))
        .and_then(|n| n.parse().ok())
}

fn denied() -> http::Response<s3s::Body> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
        <Error><Code>AccessDenied</Code><Message>part rejected by the test server</Message></Error>";
    http::Response::builder()
        .status(403)
        .header("content-type", "application/xml")
        .body(s3s::Body::from(body.to_string()))
        .unwrap()
}
