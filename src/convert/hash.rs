//! A content hash of a record that does not depend on key order, process or run.
//!
//! Reconcile compares this hash with the one stored in `_hw_hash` to find records that changed
//! without their `updated` moving (DESIGN.md §8), so it must be stable across processes and
//! versions of highwater. It runs once per loaded record, so it must also be cheap (well under a
//! microsecond for a 1 KB ticket): no sorting, no escaping, no allocation per value.
//!
//! Definition: every object entry is encoded as `len(key) key value` with a type tag per value
//! (integers as 8 little-endian bytes, floats as their IEEE bits — so `1` and `1.0` differ, as the
//! source sent different things — strings as length + UTF-8, arrays in order, nested objects as
//! their own hash), hashed with xxh3-64; the entry hashes are added (order-independent) and the sum
//! is hashed once more with the entry count.

use serde_json::{Map, Value};
use xxhash_rust::xxh3::xxh3_64;

/// The content hash of `fields`, reinterpreted as `i64` (the warehouse has no u64).
pub fn content_hash(fields: &Map<String, Value>) -> i64 {
    let mut buf = Vec::with_capacity(256);
    hash_object(fields, &mut buf) as i64
}

fn hash_object(map: &Map<String, Value>, buf: &mut Vec<u8>) -> u64 {
    let mut sum: u64 = 0;
    let mut nested = Vec::new();
    for (k, v) in map {
        buf.clear();
        buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
        buf.extend_from_slice(k.as_bytes());
        encode(v, buf, &mut nested);
        sum = sum.wrapping_add(xxh3_64(buf));
    }
    let mut tail = [0u8; 16];
    tail[..8].copy_from_slice(&sum.to_le_bytes());
    tail[8..].copy_from_slice(&(map.len() as u64).to_le_bytes());
    xxh3_64(&tail)
}

fn encode(v: &Value, buf: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    match v {
        Value::Null => buf.push(0),
        Value::Bool(b) => buf.extend_from_slice(&[1, *b as u8]),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                buf.push(2);
                buf.extend_from_slice(&i.to_le_bytes());
            } else if let Some(u) = n.as_u64() {
                buf.push(3);
                buf.extend_from_slice(&u.to_le_bytes());
            } else {
                buf.push(4);
                buf.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_bits().to_le_bytes());
            }
        }
        Value::String(s) => {
            buf.push(5);
            buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
            buf.extend_from_slice(s.as_bytes());
        }
        Value::Array(items) => {
            buf.push(6);
            buf.extend_from_slice(&(items.len() as u32).to_le_bytes());
            for item in items {
                encode(item, buf, scratch);
            }
        }
        Value::Object(map) => {
            buf.push(7);
            let mut inner = std::mem::take(scratch);
            let h = hash_object(map, &mut inner);
            *scratch = inner;
            buf.extend_from_slice(&h.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("test value must be an object"),
        }
    }

    #[test]
    fn key_order_does_not_change_the_hash_at_any_depth() {
        let a = obj(json!({"b": 1, "a": {"y": [1, {"q": 1, "p": 2}], "x": "s"}}));
        let b = obj(json!({"a": {"x": "s", "y": [1, {"p": 2, "q": 1}]}, "b": 1}));
        assert_eq!(content_hash(&a), content_hash(&b));
    }

    #[test]
    fn any_content_difference_changes_the_hash() {
        let base = obj(json!({"a": 1, "b": "x", "c": null}));
        let variants = [
            json!({"a": 1.0, "b": "x", "c": null}),
            json!({"a": "1", "b": "x", "c": null}),
            json!({"a": 1, "b": "x "}),
            json!({"a": 1, "b": "x", "c": ""}),
            json!({"a": 1, "b": "x"}),
            json!({"a": 1, "b": "x", "c": null, "d": null}),
            json!({"a": [1], "b": "x", "c": null}),
            json!({"a": 1, "bx": "", "c": null}),
            json!({"a": 1, "b": "x", "c": {}}),
            json!({"a": 1, "b": "x", "c": []}),
            json!({"a": 1, "b": "x", "c": false}),
        ];
        let h = content_hash(&base);
        for v in variants {
            assert_ne!(h, content_hash(&obj(v.clone())), "{v}");
        }
        // Moving a value between keys, or between array positions, changes it too.
        assert_ne!(
            content_hash(&obj(json!({"a": 1, "b": 2}))),
            content_hash(&obj(json!({"a": 2, "b": 1})))
        );
        assert_ne!(
            content_hash(&obj(json!({"a": [1, 2]}))),
            content_hash(&obj(json!({"a": [2, 1]})))
        );
    }

    #[test]
    fn hash_is_stable_across_releases() {
        // A stored `_hw_hash` must keep matching after an upgrade: changing the encoding breaks
        // this test, and with it every warehouse's reconcile (everything would look changed).
        let m = obj(json!({"z": "é😀", "a": [true, false, null, -5, 2.5], "o": {"k": 1}}));
        assert_eq!(content_hash(&m), STABLE);
    }

    const STABLE: i64 = 1_698_916_384_519_507_762;
}
