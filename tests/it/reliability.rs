//! Reliability against real runs: every fault the simulator injects, the retry limits, the
//! client-side rate limit, the three auth schemes, and secrets kept out of logs.
//!
//! Each run either completes with warehouse = source, or fails (or stops rate-limited) cleanly with
//! the cursor at the last committed row — and a rerun then completes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use highwater::config::Config;
use highwater::model::Cursor;
use highwater::sim::{Fault, RetryAfter, Sim};
use highwater::sync::{Pipeline, StreamReport, SyncOptions};
use serde_json::json;

use crate::util::{Opts, TOKEN, TestEnv, ticket};

/// Short timeouts and backoffs so that faults cost milliseconds.
const FAST: &str = "timeout_secs = 3\nread_timeout_secs = 0.5\nmax_retries = 3\n\
                    backoff_base_secs = 0.01\nbackoff_max_secs = 0.05\n";
const CLIENT_SECRET: &str = "sim-client-secret";
const API_SECRET: &str = "sim-secret";

enum Scheme {
    Bearer,
    OAuth2,
    Signed { secret: &'static str },
}

/// A TestEnv with 250 tickets, pages of 100 and a checkpoint per page (unless `checkpoint_rows`
/// says otherwise), and a `[source]` rewritten for `auth` plus `extra` keys.
struct Rel {
    env: TestEnv,
    vars: BTreeMap<String, String>,
}

impl Rel {
    async fn new(auth: Scheme, extra: &str, checkpoint_rows: usize) -> Rel {
        let mut env = TestEnv::new(Opts {
            page_size: 100,
            checkpoint_rows,
            ..Opts::default()
        })
        .await;
        let base = env.sim.now() - 1000;
        for id in 1..=250 {
            env.sim
                .insert_raw("ticket", ticket(id, base + id / 3, json!({})));
        }
        let mut vars: BTreeMap<String, String> = [("T".to_string(), TOKEN.to_string())].into();
        let (line, table) = match auth {
            Scheme::Bearer => ("token = \"${T}\"\n".to_string(), String::new()),
            Scheme::OAuth2 => {
                vars.insert("CS".into(), CLIENT_SECRET.into());
                (
                    String::new(),
                    "[source.oauth2]\nclient_id = \"highwater\"\nclient_secret = \"${CS}\"\n\
                     refresh_token_file = \"secrets/cerb.refresh_token\"\n"
                        .to_string(),
                )
            }
            Scheme::Signed { secret } => {
                vars.insert("CA".into(), secret.into());
                (
                    String::new(),
                    "[source.cerb_auth]\naccess_key = \"sim-key\"\nsecret = \"${CA}\"\n"
                        .to_string(),
                )
            }
        };
        let old = "token = \"${T}\"\nmax_retries = 2\ntimeout_secs = 10\n";
        assert!(
            env.toml.contains(old),
            "TestEnv's [source] changed: {}",
            env.toml
        );
        env.toml = env
            .toml
            .replace(old, &format!("{line}{FAST}{extra}{table}"));
        std::fs::write(env.path().join("highwater.toml"), &env.toml).unwrap();
        Rel { env, vars }
    }

    /// Change the config text (and the file the binary reads).
    fn set(&mut self, from: &str, to: &str) {
        assert!(
            self.env.toml.contains(from),
            "{from:?} not in {}",
            self.env.toml
        );
        self.env.toml = self.env.toml.replace(from, to);
        std::fs::write(self.env.path().join("highwater.toml"), &self.env.toml).unwrap();
    }

    fn sim(&self) -> &Sim {
        &self.env.sim
    }

    fn config(&self) -> Config {
        let path = self.env.path().join("highwater.toml");
        Config::parse(&self.env.toml, &path, self.env.path(), &self.vars).unwrap()
    }

    /// One in-process run through a freshly built pipeline (no state kept between runs).
    async fn sync(&self) -> StreamReport {
        let p = Pipeline::build(self.config()).unwrap();
        let mut r = highwater::sync::run(&p, None, &SyncOptions::default())
            .await
            .unwrap();
        r.remove(0)
    }

    /// `n` faults served to the `at`-th search from now on (1 = the next search).
    fn faults_at(&self, at: u64, faults: &[Fault]) {
        let sim = self.sim().clone();
        let faults = faults.to_vec();
        self.sim()
            .on_search(self.sim().request_count() + at, move || {
                for f in faults {
                    sim.push_fault(f);
                }
            });
    }

    /// (outcome, requests, retries, wait_ms, error) of a run.
    fn run_row(&self, run_id: &str) -> (String, i64, i64, i64, Option<String>) {
        let r = &self.env.rows(&format!(
            "SELECT outcome, requests, retries, wait_ms, error FROM highwater.runs WHERE run_id = '{run_id}'"
        ))[0];
        (
            r[0].as_str().unwrap().to_string(),
            r[1].as_i64().unwrap(),
            r[2].as_i64().unwrap(),
            r[3].as_i64().unwrap(),
            r[4].as_str().map(str::to_string),
        )
    }

    /// The key of the n-th ticket (1-based) in cursor order.
    fn key_of_row(&self, n: usize) -> Cursor {
        let mut keys: Vec<Cursor> = self
            .sim()
            .records("ticket")
            .iter()
            .map(|r| {
                Cursor::new(
                    highwater::source::parse_int(&r["updated"]).unwrap(),
                    highwater::source::parse_int(&r["id"]).unwrap(),
                )
            })
            .collect();
        keys.sort();
        keys[n - 1]
    }

    fn token_file(&self) -> std::path::PathBuf {
        self.env.path().join("secrets/cerb.refresh_token")
    }

    fn write_refresh_token(&self, rt: &str) {
        let f = self.token_file();
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, format!("{rt}\n")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// Searches of a clean run over 250 rows in pages of 100: probe, 3 pages, the empty page.
const CLEAN_SEARCHES: u64 = 5;

/// One transient fault on the second page's request: the run retries it once and completes.
/// (One checkpoint for the run: these tests are about the source, not about checkpoints.)
async fn transient(fault: Fault) -> (Rel, StreamReport) {
    let rel = Rel::new(Scheme::Bearer, "", 50_000).await;
    let before = rel.sim().request_count();
    rel.faults_at(3, &[fault]);
    let r = rel.sync().await;
    assert_eq!(r.outcome, "succeeded", "{fault:?}: {r:?}");
    rel.env.assert_warehouse_equals_source("tickets", "ticket");
    assert_eq!(r.rows_written, 250, "{fault:?}");
    let searches = rel.sim().request_count() - before;
    assert_eq!(searches, CLEAN_SEARCHES + 1, "{fault:?}: one retry");
    let (outcome, requests, retries, _, error) = rel.run_row(&r.run_id);
    assert_eq!(outcome, "succeeded");
    assert_eq!(
        requests as u64, searches,
        "{fault:?}: every request counted in highwater.runs"
    );
    assert_eq!(retries, 1, "{fault:?}");
    assert_eq!(error, None);
    (rel, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_in_seconds_is_honoured() {
    let (rel, r) = transient(Fault::RateLimit(RetryAfter::Seconds(1))).await;
    let (_, _, _, wait_ms, _) = rel.run_row(&r.run_id);
    assert!(wait_ms >= 1000, "waited {wait_ms} ms for Retry-After: 1");
}

/// The HTTP date is measured against the response's `Date` (the simulator's clock is a year
/// ahead of this machine's): one second, not a year.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_as_http_date_is_measured_against_the_server_clock() {
    let (rel, r) = transient(Fault::RateLimit(RetryAfter::HttpDate(highwater_now() + 1))).await;
    let (_, _, _, wait_ms, _) = rel.run_row(&r.run_id);
    assert!((1000..5000).contains(&wait_ms), "waited {wait_ms} ms");
}

fn highwater_now() -> i64 {
    // TestEnv's simulator clock.
    1_800_000_000
}

/// `Retry-After: 0`, none, or a date in the past: no hint, so the (short) backoff applies.
async fn no_hint(ra: RetryAfter) {
    let (rel, r) = transient(Fault::RateLimit(ra)).await;
    let (_, _, _, wait_ms, _) = rel.run_row(&r.run_id);
    assert!(
        wait_ms < 1000,
        "{ra:?}: no hint means a short backoff, waited {wait_ms} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_zero_is_no_hint() {
    no_hint(RetryAfter::Zero).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_without_retry_after_backs_off() {
    no_hint(RetryAfter::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_in_the_past_is_no_hint() {
    no_hint(RetryAfter::HttpDate(highwater_now() - 60)).await;
}

/// One test per transient fault kind: retried once, the run completes with warehouse = source.
macro_rules! transient_faults {
    ($($(#[$doc:meta])* $name:ident: $fault:expr;)*) => {$(
        $(#[$doc])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            transient($fault).await;
        }
    )*};
}

transient_faults! {
    http_500_html_is_retried: Fault::ServerError(500);
    http_502_html_is_retried: Fault::ServerError(502);
    http_503_html_is_retried: Fault::ServerError(503);
    /// Cerb's pending upgrade: 302 to `/update/locked`, 503 HTML without Retry-After.
    maintenance_page_is_retried: Fault::Maintenance;
    truncated_body_is_retried: Fault::Truncated;
    /// HTTP 200 with an HTML page instead of Cerb JSON (a captive proxy).
    unparsable_body_is_retried: Fault::BadBody;
    connection_reset_is_retried: Fault::Reset;
    /// Cerb's query timeout (`total: -1`, no rows) is not the end of the data.
    cerb_query_timeout_is_retried_not_taken_for_the_end: Fault::QueryTimeout;
}

/// A server that accepts and sends nothing is cut off by the read timeout (0.5 s here; the
/// simulator would hold the connection for 300 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out_and_is_retried() {
    let t = Instant::now();
    transient(Fault::Stall).await;
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
}

/// A body that stops half-way, connection open, is cut off by the same read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_stalling_midway_times_out_and_is_retried() {
    let t = Instant::now();
    transient(Fault::StallBody).await;
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
}

/// 30% of all searches fail at random (every transient kind): the run still converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_transient_faults_still_converge() {
    let mut rel = Rel::new(Scheme::Bearer, "", 100).await;
    // Retries enough that the seeded fault sequence cannot exhaust them.
    rel.set("max_retries = 3\n", "max_retries = 8\n");
    rel.sim().set_fault_rate(0.3);
    let r = rel.sync().await;
    rel.sim().set_fault_rate(0.0);
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    rel.env.assert_warehouse_equals_source("tickets", "ticket");
    let (_, requests, retries, _, _) = rel.run_row(&r.run_id);
    assert!(retries > 0, "the seeded faults hit this run");
    assert_eq!(requests - retries, CLEAN_SEARCHES as i64);
}

/// A Retry-After above the cap ends the run as rate_limited at once: the page fetched before it is
/// committed, the cursor sits on its last row, the binary exits 3, and the next run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_retry_after_ends_the_run_rate_limited_with_earlier_pages_committed() {
    // One checkpoint for the whole run: the page is still buffered when the 429 arrives.
    let rel = Rel::new(Scheme::Bearer, "max_retry_after_secs = 600\n", 50_000).await;
    let before = rel.sim().request_count();
    rel.faults_at(3, &[Fault::RateLimit(RetryAfter::Seconds(31_536_000_000))]);
    let t = Instant::now();
    let out = rel.env.bin().args(["sync"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(t.elapsed() < Duration::from_secs(30), "it did not sleep");
    assert!(stdout.contains("rate_limited"), "{stdout}");
    assert!(
        stderr.contains("rate limited") && stderr.contains("600 s cap"),
        "{stderr}"
    );
    assert_eq!(
        rel.sim().request_count() - before,
        3,
        "no retry after a hint above the cap"
    );

    assert_eq!(rel.env.scalar_i64("SELECT count(*) FROM tickets"), 100);
    assert_eq!(rel.env.cursor("tickets"), Some(rel.key_of_row(100)));
    let id = rel.env.rows("SELECT run_id FROM highwater.runs")[0][0]
        .as_str()
        .unwrap()
        .to_string();
    let (outcome, requests, retries, _, error) = rel.run_row(&id);
    assert_eq!(
        (outcome.as_str(), requests, retries),
        ("rate_limited", 3, 0)
    );
    assert!(error.unwrap().contains("rate limited"));

    let r = rel.sync().await;
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    rel.env.assert_warehouse_equals_source("tickets", "ticket");
}

/// Retries used up on 429s also end as rate_limited, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_spent_on_429_end_as_rate_limited() {
    let rel = Rel::new(Scheme::Bearer, "", 100).await;
    rel.faults_at(3, &[Fault::RateLimit(RetryAfter::None); 4]);
    let r = rel.sync().await;
    assert_eq!(r.outcome, "rate_limited", "{r:?}");
    assert_eq!(rel.env.cursor("tickets"), Some(rel.key_of_row(100)));
    let (outcome, requests, retries, _, _) = rel.run_row(&r.run_id);
    assert_eq!(
        (outcome.as_str(), requests, retries),
        ("rate_limited", 2 + 4, 3)
    );
}

/// 400/401/403/404 and `__status:"error"` fail at once, with the server's message, after exactly
/// one request; what was committed before stays, with the cursor on its last row.
async fn fails_fast(fault: Fault, message: &str) -> Rel {
    let rel = Rel::new(Scheme::Bearer, "", 100).await;
    let before = rel.sim().request_count();
    rel.faults_at(3, &[fault]);
    let r = rel.sync().await;
    assert_eq!(r.outcome, "failed", "{r:?}");
    let err = r.error.clone().unwrap();
    assert!(err.contains(message), "{err}");
    assert_eq!(rel.sim().request_count() - before, 3, "no retry");
    let (outcome, requests, retries, _, error) = rel.run_row(&r.run_id);
    assert_eq!((outcome.as_str(), requests, retries), ("failed", 3, 0));
    assert!(error.unwrap().contains(message));
    assert_eq!(rel.env.cursor("tickets"), Some(rel.key_of_row(100)));
    assert_eq!(rel.env.scalar_i64("SELECT count(*) FROM tickets"), 100);
    rel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_400_fails_fast_and_the_next_run_resumes_at_the_cursor() {
    let rel = fails_fast(Fault::ServerError(400), "Bad Request").await;
    let r = rel.sync().await;
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    assert_eq!(r.rows_written, 150, "only what was not committed");
    rel.env.assert_warehouse_equals_source("tickets", "ticket");
}

/// A 401 with a static bearer token: nothing to refresh, so no retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_401_with_a_static_token_fails_fast() {
    fails_fast(Fault::Unauthorized, "denied the request").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_403_fails_fast() {
    fails_fast(Fault::ServerError(403), "Forbidden").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_404_fails_fast() {
    fails_fast(Fault::ServerError(404), "Not Found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cerb_status_error_fails_fast_with_its_message() {
    fails_fast(Fault::StatusError, "An unexpected error occurred.").await;
}

/// A failure on the very first request (the probe) is recorded as a run too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_is_recorded_with_its_requests() {
    let rel = Rel::new(Scheme::Bearer, "", 100).await;
    rel.faults_at(1, &[Fault::ServerError(500), Fault::StatusError]);
    let r = rel.sync().await;
    assert_eq!(r.outcome, "failed", "{r:?}");
    let (outcome, requests, retries, _, error) = rel.run_row(&r.run_id);
    assert_eq!((outcome.as_str(), requests, retries), ("failed", 2, 1));
    assert!(error.unwrap().contains("An unexpected error occurred."));
    assert_eq!(rel.env.cursor("tickets"), None);
}

/// Per request at most `max_retries`: four 500s in a row on page 2 are 1 try + 3 retries, then
/// the run fails cleanly with page 1 committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_per_request_are_limited() {
    let rel = Rel::new(Scheme::Bearer, "", 100).await;
    let before = rel.sim().request_count();
    rel.faults_at(3, &[Fault::ServerError(500); 4]);
    let r = rel.sync().await;
    assert_eq!(r.outcome, "failed", "{r:?}");
    assert!(
        r.error
            .clone()
            .unwrap()
            .contains("gave up after 4 attempts"),
        "{r:?}"
    );
    assert_eq!(rel.sim().request_count() - before, 2 + 4);
    let (_, requests, retries, _, _) = rel.run_row(&r.run_id);
    assert_eq!((requests, retries), (6, 3));
    assert_eq!(rel.env.cursor("tickets"), Some(rel.key_of_row(100)));
    assert_eq!(rel.sync().await.outcome, "succeeded");
    rel.env.assert_warehouse_equals_source("tickets", "ticket");
}

/// A budget of 2 retries per run: the third transient fault (on the final empty page) ends it;
/// all 250 rows fetched before are committed, but the window is not closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_per_run_are_limited() {
    let rel = Rel::new(Scheme::Bearer, "max_retries_per_run = 2\n", 100).await;
    rel.faults_at(3, &[Fault::ServerError(502)]);
    rel.faults_at(5, &[Fault::Reset]);
    rel.faults_at(7, &[Fault::QueryTimeout]);
    let r = rel.sync().await;
    assert_eq!(r.outcome, "failed", "{r:?}");
    assert!(
        r.error.clone().unwrap().contains("max_retries_per_run = 2"),
        "{r:?}"
    );
    let (_, requests, retries, _, _) = rel.run_row(&r.run_id);
    assert_eq!((requests, retries), (7, 2));
    assert_eq!(rel.env.scalar_i64("SELECT count(*) FROM tickets"), 250);
    assert_eq!(rel.env.cursor("tickets"), Some(rel.key_of_row(250)));
    let r = rel.sync().await;
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    assert_eq!(r.rows_written, 0);
    rel.env.assert_warehouse_equals_source("tickets", "ticket");
}

/// `requests_per_sec` spaces requests: 7 requests at 20/s cannot take less than 6 × 50 ms, and
/// the time slept is counted as wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_rate_limit_spaces_requests() {
    let mut rel = Rel::new(Scheme::Bearer, "requests_per_sec = 20\n", 100).await;
    // Pages of 50: probe + 5 pages + the empty page.
    rel.set("page_size = 100", "page_size = 50");
    let t = Instant::now();
    let r = rel.sync().await;
    let elapsed = t.elapsed();
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    let (_, requests, retries, wait_ms, _) = rel.run_row(&r.run_id);
    assert_eq!((requests, retries), (7, 0));
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(wait_ms > 0, "the limiter's sleeps are counted");
    rel.env.assert_warehouse_equals_source("tickets", "ticket");
}

// ---------------------------------------------------------------------------------------------
// Auth

/// Two consecutive runs with OAuth2: each starts with one refresh; the first rotates the refresh
/// token and writes it (mode 0600, atomically, no temp file left); the second can only succeed by
/// reading that rotated token, since the simulator revoked the original at the first refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_token_rotation_across_two_runs() {
    let rel = Rel::new(Scheme::OAuth2, "", 100).await;
    let minted = rel.sim().mint_oauth_tokens();
    rel.write_refresh_token(&minted.refresh_token);

    let r = rel.sync().await;
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    assert_eq!(rel.sim().token_requests(), 1);
    let after_first = std::fs::read_to_string(rel.token_file()).unwrap();
    let issued = rel.sim().issued_tokens();
    assert_eq!(after_first.trim(), issued.last().unwrap().refresh_token);
    assert_ne!(after_first.trim(), minted.refresh_token, "rotated");
    let mode = std::fs::metadata(rel.token_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    rel.env.assert_warehouse_equals_source("tickets", "ticket");
    let (_, requests, _, _, _) = rel.run_row(&r.run_id);
    assert_eq!(
        requests as u64,
        CLEAN_SEARCHES + 1,
        "the token request is counted"
    );

    // New rows, later clock, a new process's worth of state: only the file carries over.
    let base = rel.sim().now();
    for id in 300..320 {
        rel.sim().insert_raw("ticket", ticket(id, base, json!({})));
    }
    rel.env.advance(30);
    let r = rel.sync().await;
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    assert_eq!(r.rows_written, 20);
    assert_eq!(rel.sim().token_requests(), 2);
    let after_second = std::fs::read_to_string(rel.token_file()).unwrap();
    assert_ne!(after_second, after_first);
    assert_eq!(
        after_second.trim(),
        rel.sim().issued_tokens().last().unwrap().refresh_token
    );
    rel.env.assert_warehouse_equals_source("tickets", "ticket");
    let leftovers: Vec<String> = std::fs::read_dir(rel.token_file().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The access token expires server-side in the middle of a run: the 401 triggers one refresh and
/// the run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_refreshes_once_on_401_after_expiry() {
    let rel = Rel::new(Scheme::OAuth2, "", 100).await;
    rel.write_refresh_token(&rel.sim().mint_oauth_tokens().refresh_token);
    let sim = rel.sim().clone();
    // Just before page 2 is answered, an hour and more passes on the server.
    rel.sim().on_search(rel.sim().request_count() + 3, move || {
        sim.set_clock(highwater::sim::Clock::Fixed(sim.now() + 7200))
    });
    let before = rel.sim().request_count();
    let r = rel.sync().await;
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    assert_eq!(
        rel.sim().token_requests(),
        2,
        "the first refresh and one after the 401"
    );
    assert_eq!(rel.sim().request_count() - before, CLEAN_SEARCHES + 1);
    let (_, requests, retries, _, _) = rel.run_row(&r.run_id);
    assert_eq!((requests, retries), (CLEAN_SEARCHES as i64 + 1 + 2, 1));
    rel.env.assert_warehouse_equals_source("tickets", "ticket");
}

/// A 401 that survives the refresh fails the run (no refresh loop); the rotated token on disk is
/// the live one, so the next run works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_a_second_401_fails_without_a_refresh_loop() {
    let rel = Rel::new(Scheme::OAuth2, "", 100).await;
    rel.write_refresh_token(&rel.sim().mint_oauth_tokens().refresh_token);
    rel.faults_at(3, &[Fault::Unauthorized, Fault::Unauthorized]);
    let r = rel.sync().await;
    assert_eq!(r.outcome, "failed", "{r:?}");
    assert!(
        r.error.clone().unwrap().contains("refused the credentials"),
        "{r:?}"
    );
    assert_eq!(rel.sim().token_requests(), 2);
    assert_eq!(rel.env.cursor("tickets"), Some(rel.key_of_row(100)));
    let r = rel.sync().await;
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    rel.env.assert_warehouse_equals_source("tickets", "ticket");
}

/// A short-lived access token is refreshed before it expires, without waiting for a 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_refreshes_before_expiry() {
    let mut rel = Rel::new(Scheme::OAuth2, "", 100).await;
    rel.set("read_timeout_secs = 0.5", "read_timeout_secs = 3");
    rel.write_refresh_token(&rel.sim().mint_oauth_tokens().refresh_token);
    // Tokens live 2 s: refreshed 1 s after issue. The probe takes 1.2 s to answer, so page 1
    // needs a fresh token.
    rel.sim().set_access_token_ttl(2);
    rel.sim()
        .push_fault(Fault::Delay(Duration::from_millis(1200)));
    let r = rel.sync().await;
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    assert!(rel.sim().token_requests() >= 2, "refreshed ahead of expiry");
    let (_, _, retries, _, _) = rel.run_row(&r.run_id);
    assert_eq!(retries, 0, "no request was refused");
    rel.env.assert_warehouse_equals_source("tickets", "ticket");
}

/// A refresh token the server no longer knows fails with what to do, and the file is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_with_a_revoked_refresh_token_fails_with_instructions() {
    let rel = Rel::new(Scheme::OAuth2, "", 100).await;
    rel.write_refresh_token("rt.0.not-a-token");
    let r = rel.sync().await;
    assert_eq!(r.outcome, "failed", "{r:?}");
    let err = r.error.unwrap();
    assert!(
        err.contains("The refresh token is invalid.") && err.contains("Token Generator"),
        "{err}"
    );
    assert_eq!(rel.sim().token_requests(), 1, "a refusal is not retried");
    assert_eq!(
        std::fs::read_to_string(rel.token_file()).unwrap(),
        "rt.0.not-a-token\n"
    );
}

/// Cerb-Auth signed requests against the simulator. Its clock is far from this machine's: the
/// first request is refused "Invalid timestamp", the client adopts the server's clock from `Date`
/// and the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cerb_auth_signed_run() {
    let rel = Rel::new(Scheme::Signed { secret: API_SECRET }, "", 100).await;
    let skewed = (rel.sim().now() - highwater::util::unix_now()).abs() > 600;
    let before = rel.sim().request_count();
    let r = rel.sync().await;
    assert_eq!(r.outcome, "succeeded", "{r:?}");
    rel.env.assert_warehouse_equals_source("tickets", "ticket");
    let (_, _, retries, _, _) = rel.run_row(&r.run_id);
    assert_eq!(
        retries,
        i64::from(skewed),
        "one retry to adopt the server clock"
    );
    assert_eq!(
        rel.sim().request_count() - before,
        CLEAN_SEARCHES + u64::from(skewed)
    );
}

/// A wrong Cerb-Auth secret fails fast on the checksum, pointing at [source.cerb_auth].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cerb_auth_with_a_wrong_secret_fails_fast() {
    let rel = Rel::new(
        Scheme::Signed {
            secret: "wrong-secret",
        },
        "",
        100,
    )
    .await;
    let skewed = (rel.sim().now() - highwater::util::unix_now()).abs() > 600;
    let before = rel.sim().request_count();
    let r = rel.sync().await;
    assert_eq!(r.outcome, "failed", "{r:?}");
    let err = r.error.unwrap();
    assert!(
        err.contains("Invalid credentials: checksum") && err.contains("[source.cerb_auth]"),
        "{err}"
    );
    assert_eq!(rel.sim().request_count() - before, 1 + u64::from(skewed));
    assert_eq!(rel.env.cursor("tickets"), None);
}

// ---------------------------------------------------------------------------------------------
// Secrets

fn md5_hex(s: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Run the binary with debug logs through a run that retries and then fails, then `status`;
/// none of the secrets may appear in anything it printed.
fn failing_run_output(rel: &Rel) -> String {
    let mut all = String::new();
    let mut cmd = rel.env.bin();
    cmd.env("HIGHWATER_LOG", "debug");
    for (k, v) in &rel.vars {
        cmd.env(k, v);
    }
    let out = cmd.args(["sync"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    all.push_str(&String::from_utf8_lossy(&out.stdout));
    all.push_str(&String::from_utf8_lossy(&out.stderr));
    for args in [&["status"][..], &["status", "--json"][..]] {
        let mut cmd = rel.env.bin();
        cmd.env("HIGHWATER_LOG", "debug");
        for (k, v) in &rel.vars {
            cmd.env(k, v);
        }
        let out = cmd.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        all.push_str(&String::from_utf8_lossy(&out.stdout));
        all.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    // The run did log, at debug level, and did fail.
    assert!(all.contains("DEBUG"), "{all}");
    assert!(all.contains("retrying"), "{all}");
    all
}

fn assert_absent(all: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!s.is_empty());
        assert!(!all.contains(s.as_str()), "secret {s:?} leaked:\n{all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_never_reaches_logs_errors_or_status() {
    let rel = Rel::new(Scheme::Bearer, "", 100).await;
    rel.faults_at(3, &[Fault::ServerError(500), Fault::Unauthorized]);
    let all = failing_run_output(&rel);
    assert!(all.contains("refused the credentials"), "{all}");
    assert_absent(&all, &[TOKEN.to_string()]);
    assert!(!format!("{:?}", rel.config()).contains(TOKEN));
}

/// OAuth2: the client secret, and every refresh and access token issued (minted, rotated, the
/// live one in the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_secrets_never_reach_logs_errors_or_status() {
    let rel = Rel::new(Scheme::OAuth2, "", 100).await;
    rel.write_refresh_token(&rel.sim().mint_oauth_tokens().refresh_token);
    rel.faults_at(3, &[Fault::Reset, Fault::Unauthorized, Fault::Unauthorized]);
    let all = failing_run_output(&rel);
    assert!(all.contains("refreshed"), "{all}");
    let mut secrets = vec![CLIENT_SECRET.to_string()];
    for p in rel.sim().issued_tokens() {
        secrets.push(p.access_token);
        secrets.push(p.refresh_token);
    }
    assert!(secrets.len() >= 5, "minted + at least two refreshes");
    assert_absent(&all, &secrets);
    assert!(!format!("{:?}", rel.config()).contains(CLIENT_SECRET));
}

/// Cerb-Auth: the secret, and md5(secret), which is what a signature is keyed with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cerb_auth_secret_never_reaches_logs_errors_or_status() {
    let rel = Rel::new(Scheme::Signed { secret: API_SECRET }, "", 100).await;
    rel.faults_at(3, &[Fault::ServerError(503), Fault::StatusError]);
    let all = failing_run_output(&rel);
    assert_absent(&all, &[API_SECRET.to_string(), md5_hex(API_SECRET)]);
    assert!(!format!("{:?}", rel.config()).contains(API_SECRET));
}
