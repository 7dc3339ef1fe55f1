//! The Cerb source: the REST search endpoint walked with a keyset cursor.
//!
//! Every request goes to `GET /rest/records/{type}/search.json?q=…&limit=N&page=1`; success is decided
//! by the envelope's `__status`, never by the HTTP status alone (Cerb answers most errors with 200).
//!
//! Reliability, in one place ([`CerbSource::with_retries`]):
//! - every request has a whole-request deadline (`timeout_secs`) and a stall detector
//!   (`read_timeout_secs`: the longest silence before the head or inside the body);
//! - transient failures — timeouts, resets, truncated or unparsable bodies, 408/425/429, 5xx (501 and
//!   505 excepted), Cerb's `total: -1` with no rows, the 503 maintenance page — are retried with
//!   exponential backoff and jitter, at most `max_retries` times per request and
//!   `max_retries_per_run` times per run;
//! - `Retry-After` (seconds, or an HTTP date measured against the response's own `Date` so that a
//!   skewed clock does not distort it) replaces the backoff; `0` or a past date means no hint; above
//!   `max_retry_after_secs` the run stops cleanly as rate-limited instead of sleeping;
//! - 400/401/403/404 and `__status:"error"` fail at once with the server's message (a 401 first gets
//!   one credential refresh, see [`auth`]);
//! - a client-side limit spaces requests to `requests_per_sec`.
//!
//! Requests, retries and time spent waiting (backoff, `Retry-After`, the rate limit) are counted per
//! run ([`CerbSource::for_run`], [`CerbSource::usage`]) and land in `highwater.runs`.

pub mod auth;
pub mod query;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::Stream;

use super::text::{RawRecord, parse_envelope};
use super::{Page, SourceError, Walk, validate_page};
use crate::config::SourceConfig;
use crate::model::{Cursor, CursorMode};

/// A source handle. Clones share the HTTP client, credentials and rate limit; [`CerbSource::for_run`]
/// gives a handle with its own request counters and retry budget.
#[derive(Clone)]
pub struct CerbSource {
    inner: Arc<Inner>,
    meter: Arc<Meter>,
}

struct Inner {
    base_url: String,
    http: reqwest::Client,
    auth: auth::Auth,
    policy: RetryPolicy,
    limiter: Option<Limiter>,
}

#[derive(Clone, Copy, Debug)]
struct RetryPolicy {
    max_retries: u32,
    max_retries_per_run: u32,
    base: Duration,
    max: Duration,
    max_retry_after: Duration,
}

/// Counters of one run.
#[derive(Default)]
struct Meter {
    requests: AtomicU64,
    retries: AtomicU64,
    wait_us: AtomicU64,
}

impl Meter {
    fn wait(&self, d: Duration) {
        self.wait_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// What a run asked of the source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// HTTP requests sent (searches and token refreshes, retries included).
    pub requests: u64,
    pub retries: u64,
    /// Time slept: backoff, `Retry-After` and the client-side rate limit.
    pub wait: Duration,
}

/// Spaces requests evenly: one every `interval`, no bursts.
struct Limiter {
    interval: Duration,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Limiter {
    async fn acquire(&self) -> Duration {
        let at = {
            let mut next = self.next.lock().await;
            let now = tokio::time::Instant::now();
            let at = (*next).max(now);
            *next = at + self.interval;
            at
        };
        let wait = at.saturating_duration_since(tokio::time::Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep_until(at).await;
        }
        wait
    }
}

/// What one search returned.
struct SearchResult {
    results: Vec<RawRecord>,
    server_time: Option<i64>,
    requests: u64,
    retries: u64,
    wait: Duration,
    bytes: u64,
}

impl CerbSource {
    pub fn new(cfg: &SourceConfig) -> Result<CerbSource, SourceError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .read_timeout(cfg.read_timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("highwater/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SourceError::Transport {
                url: cfg.url.clone(),
                message: e.to_string(),
                transient: false,
            })?;
        let limiter = cfg.requests_per_sec.map(|r| Limiter {
            interval: Duration::from_secs_f64(1.0 / r),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        });
        Ok(CerbSource {
            inner: Arc::new(Inner {
                base_url: cfg.url.trim_end_matches('/').to_string(),
                http,
                auth: auth::Auth::new(&cfg.auth),
                policy: RetryPolicy {
                    max_retries: cfg.max_retries,
                    max_retries_per_run: cfg.max_retries_per_run,
                    base: cfg.backoff_base,
                    max: cfg.backoff_max,
                    max_retry_after: cfg.max_retry_after,
                },
                limiter,
            }),
            meter: Arc::default(),
        })
    }

    /// A handle for one run: same client, credentials and rate limit; fresh counters and retry
    /// budget.
    pub fn for_run(&self) -> CerbSource {
        CerbSource {
            inner: self.inner.clone(),
            meter: Arc::default(),
        }
    }

    /// Requests, retries and waiting of this handle so far (errors included).
    pub fn usage(&self) -> Usage {
        Usage {
            requests: self.meter.requests.load(Ordering::Relaxed),
            retries: self.meter.retries.load(Ordering::Relaxed),
            wait: Duration::from_micros(self.meter.wait_us.load(Ordering::Relaxed)),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    fn search_url(&self, record_type: &str) -> String {
        format!(
            "{}/rest/records/{}/search.json",
            self.inner.base_url, record_type
        )
    }

    /// Check credentials, record type and filter with a query that matches nothing, and return the
    /// server's clock (from its `Date` header; the local clock if it sent none).
    pub async fn probe(&self, record_type: &str, filter: &str) -> Result<i64, SourceError> {
        let r = self.search(record_type, &query::probe(filter), 1).await?;
        Ok(r.server_time.unwrap_or_else(crate::util::unix_now))
    }

    /// The pages of `walk`, each validated against the cursor contract. Ends after an empty page, or
    /// when the window is exhausted. The first error ends the stream.
    pub fn pages(
        &self,
        walk: Walk,
    ) -> impl Stream<Item = Result<Page, SourceError>> + Send + 'static {
        struct State {
            src: CerbSource,
            walk: Walk,
            after: Cursor,
            page: u64,
            done: bool,
        }
        let st = State {
            src: self.clone(),
            after: walk.after,
            walk,
            page: 0,
            done: false,
        };
        futures::stream::unfold(st, |mut st| async move {
            if st.done {
                return None;
            }
            let q = match query::keyset(st.walk.mode, st.after, st.walk.horizon, &st.walk.filter) {
                Some(q) => q,
                None => {
                    // The window is empty (the cursor is at the window end): the walk is complete
                    // without asking the source, which an empty page says.
                    st.done = true;
                    let page = Page {
                        number: st.page + 1,
                        last: st.after,
                        records: Vec::new(),
                        rejects: Vec::new(),
                        requests: 0,
                        retries: 0,
                        wait: Duration::ZERO,
                        bytes: 0,
                    };
                    return Some((Ok(page), st));
                }
            };
            st.page += 1;
            let res = st
                .src
                .search(&st.walk.record_type, &q, st.walk.page_size)
                .await;
            let item = res.and_then(|r| {
                let v = validate_page(&st.walk, st.page, st.after, r.results)?;
                Ok(Page {
                    number: st.page,
                    last: v.records.last().map(|r| r.key()).unwrap_or(st.after),
                    records: v.records,
                    rejects: v.rejects,
                    requests: r.requests,
                    retries: r.retries,
                    wait: r.wait,
                    bytes: r.bytes,
                })
            });
            match &item {
                Ok(p) if p.records.is_empty() => st.done = true,
                Ok(p) => st.after = p.last,
                Err(_) => st.done = true,
            }
            Some((item, st))
        })
    }

    /// One search: transient failures retried, a 401 recovered once (credential refresh).
    async fn search(
        &self,
        record_type: &str,
        q: &str,
        limit: u32,
    ) -> Result<SearchResult, SourceError> {
        let url = self.search_url(record_type);
        let before = self.usage();
        let mut recovered = false;
        let used = AtomicU64::new(0);
        loop {
            let r = {
                let (this, url, used) = (self, url.as_str(), &used);
                self.with_retries(url, move || this.search_once(url, q, limit, used))
                    .await
            };
            match r {
                Ok(mut res) => {
                    let now = self.usage();
                    res.requests = now.requests - before.requests;
                    res.retries = now.retries - before.retries;
                    res.wait = now.wait.saturating_sub(before.wait);
                    return Ok(res);
                }
                Err(e @ SourceError::Unauthorized { .. }) if !recovered => {
                    let used = auth::Used {
                        generation: used.load(Ordering::Relaxed),
                    };
                    if !self.inner.auth.recover(used, &e).await {
                        return Err(e);
                    }
                    recovered = true;
                    self.meter.retries.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Run `once` (one attempt of a request) until it succeeds, fails for good, or the retry
    /// limits are reached. Every attempt passes the rate limit and is counted.
    async fn with_retries<T, F, Fut>(&self, url: &str, mut once: F) -> Result<T, SourceError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SourceError>>,
    {
        let policy = self.inner.policy;
        let mut attempts: u32 = 0;
        loop {
            if let Some(l) = &self.inner.limiter {
                let w = l.acquire().await;
                self.meter.wait(w);
            }
            attempts += 1;
            self.meter.requests.fetch_add(1, Ordering::Relaxed);
            let e = match once().await {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => e,
            };
            let hint = match &e {
                SourceError::Http { retry_after, .. } => retry_after.filter(|d| !d.is_zero()),
                _ => None,
            };
            if let Some(d) = hint
                && d > policy.max_retry_after
            {
                return Err(SourceError::RateLimited {
                    url: url.to_string(),
                    wait: d,
                    cap: policy.max_retry_after,
                });
            }
            if attempts > policy.max_retries {
                return Err(SourceError::RetriesExhausted {
                    attempts,
                    last: Box::new(e),
                });
            }
            let spent = self.meter.retries.load(Ordering::Relaxed);
            if spent >= policy.max_retries_per_run as u64 {
                return Err(SourceError::RetryBudget {
                    budget: policy.max_retries_per_run,
                    last: Box::new(e),
                });
            }
            let delay = hint.unwrap_or_else(|| backoff(&policy, attempts));
            tracing::warn!(
                url = %url, attempt = attempts, delay_ms = delay.as_millis() as u64,
                retry_after = hint.is_some(), error = %e,
                "transient source error; retrying"
            );
            self.meter.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            self.meter.wait(delay);
        }
    }

    /// One attempt. `used` receives what the request was authorized with (also when it fails, so
    /// that a 401 can tell a stale token from a fresh one).
    async fn search_once(
        &self,
        url: &str,
        q: &str,
        limit: u32,
        used: &AtomicU64,
    ) -> Result<SearchResult, SourceError> {
        let limit = limit.to_string();
        let mut req = self
            .inner
            .http
            .get(url)
            .query(&[("q", q), ("limit", limit.as_str()), ("page", "1")])
            .build()
            .map_err(|e| transport(url, e))?;
        let u = self.inner.auth.authorize(self, &mut req).await?;
        used.store(u.generation, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let resp = self
            .inner
            .http
            .execute(req)
            .await
            .map_err(|e| transport(url, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let server_date = headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s).ok());
        let server_time = server_date
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        if let Some(t) = server_time {
            self.inner.auth.observe_server_time(t);
        }
        let body = resp.bytes().await.map_err(|e| transport(url, e))?;
        tracing::debug!(
            url = %url, status, bytes = body.len(), ms = started.elapsed().as_millis() as u64,
            "search answered"
        );
        let message_of = |body: &[u8]| {
            parse_envelope(body)
                .ok()
                .and_then(|e| e.message)
                .unwrap_or_else(|| crate::util::snippet(&String::from_utf8_lossy(body), 200))
        };
        if status == 401 {
            return Err(SourceError::Unauthorized {
                url: url.to_string(),
                message: message_of(&body),
                hint: self.inner.auth.hint(),
            });
        }
        if status != 200 {
            return Err(SourceError::Http {
                url: url.to_string(),
                status,
                body: message_of(&body),
                retry_after: headers
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        parse_retry_after(v, server_date.unwrap_or_else(SystemTime::now))
                    }),
            });
        }
        // One bad record does not make the body bad: see `source::text`.
        let env = parse_envelope(&body).map_err(|e| SourceError::BadBody {
            url: url.to_string(),
            message: format!(
                "{e} (body starts {:?})",
                crate::util::snippet(&String::from_utf8_lossy(&body), 80)
            ),
        })?;
        if env.status.as_deref() != Some("success") {
            return Err(SourceError::Cerb {
                url: url.to_string(),
                message: env
                    .message
                    .unwrap_or_else(|| "no message (missing __status)".to_string()),
                code: env.error,
            });
        }
        let results = env.results.ok_or_else(|| SourceError::BadBody {
            url: url.to_string(),
            message: "success envelope without `results`".to_string(),
        })?;
        // `total: -1` is Cerb's query timeout. Without rows it is the page query that timed out
        // (an empty page here is NOT the end of the data); with rows only the count timed out and
        // the rows are good (`total` is advisory).
        if env.total == Some(-1) && results.is_empty() {
            return Err(SourceError::QueryTimeout {
                url: url.to_string(),
            });
        }
        Ok(SearchResult {
            results,
            server_time,
            requests: 1,
            retries: 0,
            wait: Duration::ZERO,
            bytes: body.len() as u64,
        })
    }
}

fn transport(url: &str, e: reqwest::Error) -> SourceError {
    // Timeouts, resets and truncated bodies are worth another try; a malformed URL or a TLS
    // configuration error is not.
    let transient =
        e.is_timeout() || e.is_connect() || e.is_body() || e.is_request() || e.is_decode();
    let timeout = e.is_timeout();
    let mut chain = Vec::new();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        chain.push(s.to_string());
        src = s.source();
    }
    // The URL is in the error already; reqwest's copy of it would repeat the whole query.
    let mut message = if timeout {
        "timed out (source.read_timeout_secs of silence, or source.timeout_secs in all)".to_string()
    } else {
        e.without_url().to_string()
    };
    for part in chain {
        if !message.contains(&part) {
            message.push_str(": ");
            message.push_str(&part);
        }
    }
    SourceError::Transport {
        url: url.to_string(),
        message,
        transient,
    }
}

fn retry_after_of(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let now = h
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok())
        .unwrap_or_else(SystemTime::now);
    h.get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
}

/// `Retry-After` as seconds or an HTTP date, the date measured from `now` (the response's `Date`
/// when it has one); `0` or a past date give zero, which callers treat as "no hint".
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Exponential backoff with jitter: attempt n waits between half and all of base·2^(n-1), capped.
fn backoff(p: &RetryPolicy, attempt: u32) -> Duration {
    let exp = p
        .base
        .saturating_mul(1u32 << attempt.clamp(1, 17).saturating_sub(1));
    let cap = exp.min(p.max);
    let jitter: f64 = rand::random::<f64>();
    cap.mul_f64(0.5 + 0.5 * jitter)
}

impl CursorMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CursorMode::UpdatedId => "updated_id",
            CursorMode::Id => "id",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        let future = httpdate::fmt_http_date(now + Duration::from_secs(120));
        let d = parse_retry_after(&future, now).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        // Measured against the server's clock, not this machine's.
        let server = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let d = parse_retry_after(
            &httpdate::fmt_http_date(server + Duration::from_secs(30)),
            server,
        );
        assert_eq!(d, Some(Duration::from_secs(30)));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_retries: 5,
            max_retries_per_run: 50,
            base: Duration::from_millis(250),
            max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(900),
        };
        assert!(backoff(&p, 1) <= Duration::from_millis(250));
        assert!(backoff(&p, 1) >= Duration::from_millis(125));
        assert!(backoff(&p, 3) >= Duration::from_millis(500));
        assert!(backoff(&p, 30) <= p.max);
        assert!(backoff(&p, 30) >= p.max / 2);
    }
}
