//! The Cerb search queries highwater sends, built in one place because most obvious spellings are
//! silently wrong on a real Cerb (CERB_API.md §4): `updated:>T` matches everything, a bare
//! `updated:T` means T..now, a top-level OR without parentheses matches nothing, and a `limit:`
//! token caps pages at 250. What is sent instead:
//!
//! ```text
//! (updated:"<T+1> to <H>" OR (updated:"<T> to <T>" id:><I>)) <filter> sort:updated,id
//! ```
//! with `limit=500&page=1` as URL parameters. Both range ends are numeric and inclusive.

use crate::model::{Cursor, CursorMode};

/// The `q` text for the next page after `after`, or `None` when the window holds nothing more.
pub fn keyset(mode: CursorMode, after: Cursor, horizon: i64, filter: &str) -> Option<String> {
    let (pred, sort) = match mode {
        CursorMode::Id => {
            if after.id == i64::MAX {
                return None;
            }
            (format!("id:>{}", after.id), "sort:id")
        }
        CursorMode::UpdatedId => {
            let t = after.updated;
            let mut parts = Vec::with_capacity(2);
            if t < horizon {
                parts.push(format!("updated:\"{} to {}\"", t + 1, horizon));
            }
            if !after.second_done() && t <= horizon {
                parts.push(format!("(updated:\"{t} to {t}\" id:>{})", after.id));
            }
            if parts.is_empty() {
                return None;
            }
            (format!("({})", parts.join(" OR ")), "sort:updated,id")
        }
    };
    let mut q = pred;
    if !filter.is_empty() {
        q.push(' ');
        q.push_str(filter);
    }
    q.push(' ');
    q.push_str(sort);
    Some(q)
}

/// A query that matches nothing cheaply; used to learn the server's clock and check credentials,
/// the record type and the filter before a walk.
pub fn probe(filter: &str) -> String {
    if filter.is_empty() {
        "id:0".to_string()
    } else {
        format!("id:0 {filter}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyset_query_has_outer_parentheses_and_inclusive_ranges() {
        let q = keyset(
            CursorMode::UpdatedId,
            Cursor::new(1796322050, 450),
            1796400000,
            "",
        )
        .unwrap();
        assert_eq!(
            q,
            "(updated:\"1796322051 to 1796400000\" OR (updated:\"1796322050 to 1796322050\" id:>450)) sort:updated,id"
        );
    }

    #[test]
    fn filter_goes_between_predicate_and_sort() {
        let q = keyset(CursorMode::UpdatedId, Cursor::new(5, 1), 9, "status:o").unwrap();
        assert_eq!(
            q,
            "(updated:\"6 to 9\" OR (updated:\"5 to 5\" id:>1)) status:o sort:updated,id"
        );
    }

    #[test]
    fn cursor_at_horizon_only_reads_the_rest_of_its_second() {
        let q = keyset(CursorMode::UpdatedId, Cursor::new(9, 3), 9, "").unwrap();
        assert_eq!(q, "((updated:\"9 to 9\" id:>3)) sort:updated,id");
        assert_eq!(
            keyset(CursorMode::UpdatedId, Cursor::window_done(9), 9, ""),
            None
        );
        assert_eq!(
            keyset(CursorMode::UpdatedId, Cursor::new(10, 3), 9, ""),
            None
        );
    }

    #[test]
    fn finished_second_is_skipped() {
        let q = keyset(CursorMode::UpdatedId, Cursor::window_done(5), 9, "").unwrap();
        assert_eq!(q, "(updated:\"6 to 9\") sort:updated,id");
    }

    #[test]
    fn id_mode() {
        assert_eq!(
            keyset(CursorMode::Id, Cursor::new(0, 41), 0, "").unwrap(),
            "id:>41 sort:id"
        );
    }
}
