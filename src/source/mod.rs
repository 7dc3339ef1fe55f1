//! Sources: where records come from. A source answers two questions, each as a stream of pages:
//! "which records changed after this cursor, up to this horizon" (sync) and "all records in id order"
//! (reconcile). Everything Cerb-specific lives in [`cerb`].
//!
//! The page contract (DESIGN.md §2) is enforced here, before any record reaches the converter: a page
//! is accepted only if its records strictly increase by cursor key, are all above the cursor and at
//! or below the horizon. A page that breaks it fails the run; it is never retried in a loop.

pub mod cerb;

use std::time::Duration;

use crate::model::{Cursor, CursorMode, Record};

/// One validated page of records.
#[derive(Debug)]
pub struct Page {
    /// 1-based number of the page within this walk (for messages).
    pub number: u64,
    pub records: Vec<Record>,
    /// The key of the last record: the cursor once this page is committed.
    pub last: Cursor,
    /// HTTP requests this page took, retries included.
    pub requests: u64,
    pub retries: u64,
    pub wait: Duration,
    pub bytes: u64,
}

/// What to walk.
#[derive(Clone, Debug)]
pub struct Walk {
    pub record_type: String,
    pub mode: CursorMode,
    pub cursor_field: String,
    pub filter: String,
    pub page_size: u32,
    /// Exclusive lower bound.
    pub after: Cursor,
    /// Inclusive upper bound on `updated` (the window end H); ignored in `id` mode.
    pub horizon: i64,
    /// Stream name, for error messages.
    pub stream: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("request to {url} failed: {message}")]
    Transport {
        url: String,
        message: String,
        transient: bool,
    },
    #[error("{url} answered HTTP {status}: {body}")]
    Http {
        url: String,
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("{url} refused the credentials (HTTP 401: {message}); {hint}")]
    Unauthorized {
        url: String,
        message: String,
        /// What to check, for the configured auth scheme.
        hint: String,
    },
    /// Getting or keeping credentials failed (token file, token endpoint). Never carries a secret.
    #[error("{message}")]
    Credentials { message: String },
    #[error("Cerb reported an error for {url}: {message}{}", .code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Cerb {
        url: String,
        message: String,
        code: Option<String>,
    },
    #[error("Cerb's search timed out (total: -1) for {url}")]
    QueryTimeout { url: String },
    #[error("{url} sent a body that is not a Cerb response: {message}")]
    BadBody { url: String, message: String },
    #[error(
        "rate limited by {url}: the server asks to wait {} s, more than the {} s cap; stopping cleanly",
        .wait.as_secs(), .cap.as_secs()
    )]
    RateLimited {
        url: String,
        wait: Duration,
        cap: Duration,
    },
    #[error("stream {stream}, page {page}: {reason}")]
    InvalidPage {
        stream: String,
        page: u64,
        reason: String,
    },
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        attempts: u32,
        last: Box<SourceError>,
    },
    #[error(
        "the run spent its retry budget (source.max_retries_per_run = {budget}) on a flaky source; last error: {last}"
    )]
    RetryBudget { budget: u32, last: Box<SourceError> },
}

impl SourceError {
    /// Worth trying again: timeouts, resets, truncated bodies, 429, 5xx, Cerb's `total: -1`.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Transport { transient, .. } => *transient,
            // 501 and 505 say the server will never do it; every other 5xx may pass.
            SourceError::Http { status, .. } => {
                matches!(*status, 408 | 425 | 429)
                    || (*status >= 500 && !matches!(*status, 501 | 505))
            }
            SourceError::QueryTimeout { .. } | SourceError::BadBody { .. } => true,
            SourceError::Unauthorized { .. }
            | SourceError::Credentials { .. }
            | SourceError::Cerb { .. }
            | SourceError::RateLimited { .. }
            | SourceError::InvalidPage { .. }
            | SourceError::RetriesExhausted { .. }
            | SourceError::RetryBudget { .. } => false,
        }
    }

    /// The source is throttling us: a `Retry-After` above the cap, or retries spent on 429s. Such
    /// a run ends as `rate_limited` (everything fetched so far committed), not `failed`.
    pub fn is_rate_limited(&self) -> bool {
        match self {
            SourceError::RateLimited { .. } => true,
            SourceError::RetriesExhausted { last, .. } | SourceError::RetryBudget { last, .. } => {
                matches!(**last, SourceError::Http { status: 429, .. })
            }
            _ => false,
        }
    }
}

/// Parse an integer that Cerb may send as a JSON number or a numeric string.
pub fn parse_int(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

/// Check one page against the cursor contract and turn its objects into [`Record`]s.
pub fn validate_page(
    walk: &Walk,
    page: u64,
    after: Cursor,
    objects: Vec<serde_json::Map<String, serde_json::Value>>,
) -> Result<Vec<Record>, SourceError> {
    let bad = |reason: String| SourceError::InvalidPage {
        stream: walk.stream.clone(),
        page,
        reason,
    };
    let mut out = Vec::with_capacity(objects.len());
    let mut prev = after;
    for (i, fields) in objects.into_iter().enumerate() {
        let id = match fields.get("id") {
            Some(v) => parse_int(v).ok_or_else(|| {
                bad(format!(
                    "record #{} has an id that is not an integer: {}",
                    i + 1,
                    crate::util::snippet(&v.to_string(), 60)
                ))
            })?,
            None => return Err(bad(format!("record #{} has no `id` field", i + 1))),
        };
        let updated = match walk.mode {
            CursorMode::Id => 0,
            CursorMode::UpdatedId => match fields.get(&walk.cursor_field) {
                // Cerb's `"0 to 0"` range matches NULL too; such rows sort first, as 0.
                Some(serde_json::Value::Null) => 0,
                Some(v) => parse_int(v).ok_or_else(|| {
                    bad(format!(
                        "record id {id}: `{}` is not a unix timestamp: {}",
                        walk.cursor_field,
                        crate::util::snippet(&v.to_string(), 60)
                    ))
                })?,
                None => {
                    return Err(bad(format!(
                        "record id {id} has no `{}` field (set cursor_field, or cursor = \"id\")",
                        walk.cursor_field
                    )));
                }
            },
        };
        let key = Cursor::new(updated, id);
        if key <= prev {
            return Err(bad(if i == 0 {
                format!(
                    "the first record {key} is not after the cursor {after}: the source ignored the keyset filter"
                )
            } else {
                format!(
                    "records are not strictly increasing by ({}, id): {key} follows {prev}; the source ignored the sort",
                    walk.cursor_field
                )
            }));
        }
        if walk.mode == CursorMode::UpdatedId && updated > walk.horizon {
            return Err(bad(format!(
                "record {key} is past the window end {}: the source ignored the range",
                walk.horizon
            )));
        }
        prev = key;
        out.push(Record {
            id,
            updated,
            fields,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn walk() -> Walk {
        Walk {
            record_type: "ticket".into(),
            mode: CursorMode::UpdatedId,
            cursor_field: "updated".into(),
            filter: String::new(),
            page_size: 500,
            after: Cursor::new(10, 5),
            horizon: 100,
            stream: "tickets".into(),
        }
    }

    fn objs(v: serde_json::Value) -> Vec<serde_json::Map<String, serde_json::Value>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_object().unwrap().clone())
            .collect()
    }

    #[test]
    fn accepts_increasing_rows_and_string_ids() {
        let recs = validate_page(
            &walk(),
            1,
            Cursor::new(10, 5),
            objs(json!([{"id": 6, "updated": 10}, {"id": "9", "updated": 11}, {"id": "10", "updated": 11}])),
        )
        .unwrap();
        let keys: Vec<_> = recs.iter().map(|r| r.key()).collect();
        assert_eq!(
            keys,
            vec![Cursor::new(10, 6), Cursor::new(11, 9), Cursor::new(11, 10)]
        );
    }

    #[test]
    fn rejects_rows_at_or_below_cursor() {
        let e = validate_page(
            &walk(),
            3,
            Cursor::new(10, 5),
            objs(json!([{"id": 5, "updated": 10}])),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("stream tickets, page 3"), "{msg}");
        assert!(msg.contains("not after the cursor"), "{msg}");
        assert!(!e.is_transient());
    }

    #[test]
    fn rejects_unsorted_rows_and_rows_past_horizon() {
        let e = validate_page(
            &walk(),
            1,
            Cursor::new(10, 5),
            objs(json!([{"id": 8, "updated": 12}, {"id": 7, "updated": 12}])),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not strictly increasing"), "{e}");
        let e = validate_page(
            &walk(),
            1,
            Cursor::new(10, 5),
            objs(json!([{"id": 8, "updated": 101}])),
        )
        .unwrap_err();
        assert!(e.to_string().contains("past the window end"), "{e}");
    }

    #[test]
    fn rejects_missing_or_bad_ids() {
        let e =
            validate_page(&walk(), 1, Cursor::START, objs(json!([{"updated": 12}]))).unwrap_err();
        assert!(e.to_string().contains("no `id`"), "{e}");
        let e = validate_page(
            &walk(),
            1,
            Cursor::START,
            objs(json!([{"id": "x1", "updated": 12}])),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not an integer"), "{e}");
    }

    #[test]
    fn parse_int_accepts_numbers_and_numeric_strings_only() {
        assert_eq!(parse_int(&json!(42)), Some(42));
        assert_eq!(parse_int(&json!("42")), Some(42));
        assert_eq!(parse_int(&json!(" 7 ")), Some(7));
        assert_eq!(parse_int(&json!(4.0)), Some(4));
        assert_eq!(parse_int(&json!(4.5)), None);
        assert_eq!(parse_int(&json!("4a")), None);
        assert_eq!(parse_int(&json!(null)), None);
        assert_eq!(parse_int(&json!(i64::MAX)), Some(i64::MAX));
    }
}
