//! The Cerb source: the REST search endpoint walked with a keyset cursor.
//!
//! Every request goes to `GET /rest/records/{type}/search.json?q=…&limit=N&page=1`; success is decided
//! by the envelope's `__status`, never by the HTTP status alone (Cerb answers most errors with 200).
//! Transient failures are retried here with exponential backoff and jitter; everything else fails
//! fast with the server's message.

pub mod query;

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;

use super::text::{RawRecord, parse_envelope};
use super::{Page, SourceError, Walk, validate_page};
use crate::config::{Secret, SourceConfig};
use crate::model::{Cursor, CursorMode};

/// Retry-After above this ends the run as rate-limited instead of sleeping.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(15 * 60);
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct CerbSource {
    inner: Arc<Inner>,
}

struct Inner {
    base_url: String,
    token: Secret,
    http: reqwest::Client,
    max_retries: u32,
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
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("highwater/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SourceError::Transport {
                url: cfg.url.clone(),
                message: e.to_string(),
                transient: false,
            })?;
        Ok(CerbSource {
            inner: Arc::new(Inner {
                base_url: cfg.url.trim_end_matches('/').to_string(),
                token: cfg.token.clone(),
                http,
                max_retries: cfg.max_retries,
            }),
        })
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

    /// One search with retries for transient failures.
    async fn search(
        &self,
        record_type: &str,
        q: &str,
        limit: u32,
    ) -> Result<SearchResult, SourceError> {
        let url = self.search_url(record_type);
        let mut attempt: u32 = 0;
        let mut waited = Duration::ZERO;
        loop {
            attempt += 1;
            match self.search_once(&url, q, limit).await {
                Ok(mut r) => {
                    r.requests = attempt as u64;
                    r.retries = (attempt - 1) as u64;
                    r.wait = waited;
                    return Ok(r);
                }
                Err(e) if e.is_transient() && attempt <= self.inner.max_retries => {
                    let hint = match &e {
                        SourceError::Http { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    let delay = match hint {
                        Some(d) if d > RETRY_AFTER_CAP => {
                            return Err(SourceError::RateLimited {
                                url,
                                wait: d,
                                cap: RETRY_AFTER_CAP,
                            });
                        }
                        Some(d) if !d.is_zero() => d,
                        _ => backoff(attempt),
                    };
                    tracing::warn!(
                        url = %url, attempt, delay_ms = delay.as_millis() as u64, error = %e,
                        "transient source error; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    waited += delay;
                }
                Err(e) if e.is_transient() => {
                    return Err(SourceError::RetriesExhausted {
                        attempts: attempt,
                        last: Box::new(e),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn search_once(
        &self,
        url: &str,
        q: &str,
        limit: u32,
    ) -> Result<SearchResult, SourceError> {
        let limit = limit.to_string();
        let resp = self
            .inner
            .http
            .get(url)
            .bearer_auth(self.inner.token.expose())
            .query(&[("q", q), ("limit", limit.as_str()), ("page", "1")])
            .send()
            .await
            .map_err(|e| transport(url, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let server_time = headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        let body = resp.bytes().await.map_err(|e| transport(url, e))?;
        if status == 401 {
            let message = parse_envelope(&body)
                .ok()
                .and_then(|e| e.message)
                .unwrap_or_else(|| crate::util::snippet(&String::from_utf8_lossy(&body), 200));
            return Err(SourceError::Unauthorized {
                url: url.to_string(),
                message,
            });
        }
        if status != 200 {
            return Err(SourceError::Http {
                url: url.to_string(),
                status,
                body: crate::util::snippet(&String::from_utf8_lossy(&body), 200),
                retry_after: headers
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after),
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
        if env.total == Some(-1) {
            return Err(SourceError::QueryTimeout {
                url: url.to_string(),
            });
        }
        let results = env.results.ok_or_else(|| SourceError::BadBody {
            url: url.to_string(),
            message: "success envelope without `results`".to_string(),
        })?;
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
    let mut message = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    SourceError::Transport {
        url: url.to_string(),
        message,
        transient,
    }
}

/// `Retry-After` as seconds or an HTTP date; `0` or a past date means "no hint".
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Exponential backoff with full jitter.
fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempt.min(16).saturating_sub(1));
    let cap = exp.min(BACKOFF_MAX);
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
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let future =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
        let d = parse_retry_after(&future).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(250));
        assert!(backoff(3) >= Duration::from_millis(500));
        assert!(backoff(30) <= BACKOFF_MAX);
    }
}
