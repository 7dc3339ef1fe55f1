//! Sources: where records come from. A source answers two questions, each as a stream of pages:
//! "which records changed after this cursor, up to this horizon" (sync) and "all records in id order"
//! (reconcile). Everything Cerb-specific lives in [`cerb`].
//!
//! The page contract (DESIGN.md §2) is enforced here, before any record reaches the converter: a page
//! is accepted only if its records strictly increase by cursor key, are all above the cursor and at
//! or below the horizon. A page that breaks it fails the run; it is never retried in a loop.

pub mod cerb;
pub mod text;

use std::time::Duration;

pub use text::{RawRecord, Repairs};

use crate::model::{Cursor, CursorMode, Record, Reject};

/// One validated page of records.
#[derive(Debug)]
pub struct Page {
    /// 1-based number of the page within this walk (for messages).
    pub number: u64,
    pub records: Vec<Record>,
    /// Records that cannot be loaded (no usable id, not a JSON object); see [`validate_page`].
    pub rejects: Vec<Reject>,
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

/// A page checked against the cursor contract: the records to load, the ones to reject.
#[derive(Debug, Default)]
pub struct Validated {
    pub records: Vec<Record>,
    pub rejects: Vec<Reject>,
}

/// Check one page against the cursor contract and turn its objects into [`Record`]s.
///
/// A record without a usable `id` (missing, null, not an integer or numeric string, or not
/// positive: Cerb ids start at 1) cannot be ordered by the keyset, so it cannot be loaded; it is
/// returned as a [`Reject`] and the rest of the page is checked as if it were not there. The
/// cursor then moves to the page's last loadable key, which the source's own sort puts after the
/// rejected record or in the same second — the keyset query reads on from there either way. A
/// rejected record that does carry a cursor timestamp must still respect the window (not past
/// the horizon, not before the previous record's second): a source that breaks that has ignored
/// the query, and the page fails as for any record. A full page with nothing loadable on it would
/// give the cursor nowhere to go: that fails the run (never a loop). A short page with nothing
/// loadable is the last page of the window, and the walk ends normally.
///
/// A record with a usable id but no usable cursor field is a contract violation, not a reject: it
/// is nearly always a wrong `cursor_field` in the config, and rejecting every record of a stream
/// would pass the cursor over data that a fixed config would load.
pub fn validate_page(
    walk: &Walk,
    page: u64,
    after: Cursor,
    objects: Vec<RawRecord>,
) -> Result<Validated, SourceError> {
    let bad = |reason: String| SourceError::InvalidPage {
        stream: walk.stream.clone(),
        page,
        reason,
    };
    let total = objects.len();
    let mut out = Validated {
        records: Vec::with_capacity(total),
        rejects: Vec::new(),
    };
    let mut prev = after;
    for (i, item) in objects.into_iter().enumerate() {
        let n = i + 1;
        let (fields, repairs) = match item {
            RawRecord::Object { fields, repairs } => (fields, repairs),
            RawRecord::Unparsable { raw, reason } => {
                out.rejects.push(Reject {
                    record_id: None,
                    raw,
                    reason: format!("page {page} record #{n}: {reason}"),
                });
                continue;
            }
        };
        let id = match fields.get("id") {
            Some(v) => match parse_int(v) {
                Some(id) if id > 0 => Ok(id),
                Some(id) => Err((
                    Some(id.to_string()),
                    format!("page {page} record #{n}: id {id} is not a Cerb id (ids start at 1)"),
                )),
                None => Err((
                    (!v.is_null()).then(|| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    }),
                    format!(
                        "page {page} record #{n}: `id` is not an integer: {}",
                        crate::util::snippet(&v.to_string(), 60)
                    ),
                )),
            },
            None => Err((
                None,
                format!("page {page} record #{n}: the record has no `id` field"),
            )),
        };
        let id = match id {
            Ok(id) => id,
            Err((record_id, reason)) => {
                if walk.mode == CursorMode::UpdatedId
                    && let Some(updated) = fields.get(&walk.cursor_field).and_then(parse_int)
                {
                    if updated > walk.horizon {
                        return Err(bad(format!(
                            "record #{n} (no usable id) is dated {updated}, past the window end {}: the source ignored the range",
                            walk.horizon
                        )));
                    }
                    if updated < prev.updated {
                        return Err(bad(format!(
                            "record #{n} (no usable id) is dated {updated}, before {prev}: the source ignored the sort"
                        )));
                    }
                }
                if !repairs.is_empty() {
                    tracing::warn!(stream = %walk.stream, page, record = n, repairs = %repairs,
                        "record text repaired (record rejected, see below)");
                }
                let raw = serde_json::to_string(&fields).unwrap_or_default();
                out.rejects.push(Reject {
                    record_id,
                    raw,
                    reason,
                });
                continue;
            }
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
            return Err(bad(if prev == after {
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
        if !repairs.is_empty() {
            // Once per record, with its id: the policy is in `text`.
            tracing::warn!(stream = %walk.stream, page, record_id = id, repairs = %repairs,
                "record text repaired by the text policy");
        }
        prev = key;
        out.records.push(Record {
            id,
            updated,
            fields,
        });
    }
    if out.records.is_empty() && !out.rejects.is_empty() && total >= walk.page_size as usize {
        return Err(bad(format!(
            "none of the {total} records on this full page can be loaded (the first: {}); the cursor \
             cannot move past them, so the run stops instead of asking for the same page again. \
             Fix these records at the source (if they are fewer than 500 in a row, a larger page_size also gets past them)",
            out.rejects[0].reason
        )));
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

    fn objs(v: serde_json::Value) -> Vec<RawRecord> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| RawRecord::Object {
                fields: o.as_object().unwrap().clone(),
                repairs: Repairs::default(),
            })
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
        .unwrap()
        .records;
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
    fn records_without_a_usable_id_are_rejected_and_the_rest_validated() {
        let mut w = walk();
        w.page_size = 10;
        let v = validate_page(
            &w,
            2,
            Cursor::new(10, 5),
            objs(json!([
                {"id": 6, "updated": 10},
                {"updated": 11},
                {"id": null, "updated": 11},
                {"id": "x1", "updated": 11},
                {"id": 0, "updated": 11},
                {"id": -3},
                {"id": 4.5, "updated": 12},
                {"id": 7, "updated": 12},
            ])),
        )
        .unwrap();
        let keys: Vec<_> = v.records.iter().map(|r| r.key()).collect();
        assert_eq!(keys, vec![Cursor::new(10, 6), Cursor::new(12, 7)]);
        let ids: Vec<_> = v.rejects.iter().map(|r| r.record_id.clone()).collect();
        assert_eq!(
            ids,
            vec![
                None,
                None,
                Some("x1".into()),
                Some("0".into()),
                Some("-3".into()),
                Some("4.5".into())
            ]
        );
        assert!(
            v.rejects[0].reason.contains("page 2 record #2")
                && v.rejects[0].reason.contains("no `id`")
        );
        assert!(
            v.rejects[3].reason.contains("ids start at 1"),
            "{}",
            v.rejects[3].reason
        );
        assert!(v.rejects[2].raw.contains("\"x1\""), "{}", v.rejects[2].raw);
    }

    #[test]
    fn a_rejected_record_must_still_sit_inside_the_window() {
        let e = validate_page(
            &walk(),
            1,
            Cursor::new(10, 5),
            objs(json!([{"updated": 101}])),
        )
        .unwrap_err();
        assert!(e.to_string().contains("past the window end"), "{e}");
        let e = validate_page(
            &walk(),
            1,
            Cursor::new(10, 5),
            objs(json!([{"id": 8, "updated": 12}, {"updated": 11}])),
        )
        .unwrap_err();
        assert!(e.to_string().contains("ignored the sort"), "{e}");
    }

    #[test]
    fn a_page_of_nothing_but_rejects_ends_the_walk_when_short_and_fails_when_full() {
        let mut w = walk();
        w.page_size = 3;
        let short = validate_page(
            &w,
            4,
            Cursor::new(10, 5),
            objs(json!([{"updated": 12}, {"id": "?"}])),
        )
        .unwrap();
        assert!(short.records.is_empty());
        assert_eq!(short.rejects.len(), 2);
        let e = validate_page(
            &w,
            4,
            Cursor::new(10, 5),
            objs(json!([{"updated": 12}, {"id": "?"}, {"id": null}])),
        )
        .unwrap_err();
        assert!(e.to_string().contains("none of the 3 records"), "{e}");
        assert!(!e.is_transient());
    }

    #[test]
    fn elements_that_are_not_objects_are_rejected_with_their_text() {
        let v = validate_page(
            &walk(),
            1,
            Cursor::new(10, 5),
            vec![
                RawRecord::Unparsable {
                    raw: "[1,2]".into(),
                    reason: "the record is an array, not a JSON object".into(),
                },
                RawRecord::Object {
                    fields: json!({"id": 9, "updated": 11}).as_object().unwrap().clone(),
                    repairs: Repairs::default(),
                },
            ],
        )
        .unwrap();
        assert_eq!(v.records.len(), 1);
        assert_eq!(v.rejects[0].raw, "[1,2]");
        assert!(v.rejects[0].reason.contains("record #1"));
    }

    #[test]
    fn a_missing_cursor_field_is_still_a_contract_violation() {
        let e = validate_page(&walk(), 1, Cursor::START, objs(json!([{"id": 3}]))).unwrap_err();
        assert!(e.to_string().contains("no `updated` field"), "{e}");
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
