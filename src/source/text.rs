//! Parsing a search response without letting one record's bad text kill the page.
//!
//! serde_json refuses a whole document for one lone surrogate escape (`"\ud800"`), one raw control
//! character or one invalid UTF-8 byte in any string, and for one number beyond a double's range.
//! Cerb itself never sends those (it encodes with `JSON_INVALID_UTF8_SUBSTITUTE`: invalid UTF-8
//! becomes U+FFFD), but a proxy, a plugin or a database holding CESU-8 can. So a response is
//! parsed in two steps:
//!
//! 1. the fast path: the whole envelope in one `serde_json` pass (nearly every page);
//! 2. only if that fails, or the body holds a `\u0000` escape: the body is repaired by the text
//!    policy below, split into records, and each record parsed on its own. A record that still
//!    does not parse, or is not a JSON object, becomes [`RawRecord::Unparsable`] (the sync job
//!    rejects it into `highwater.rejects`); the page goes on.
//!
//! The text policy, applied to every string (values and field names) of every response:
//! - a lone surrogate escape (`\uD800`–`\uDFFF` not forming a pair) becomes U+FFFD, as Cerb does
//!   with invalid UTF-8; a valid pair is kept;
//! - any other invalid escape (`\q`, `\u` without four hex digits) becomes U+FFFD, and the text after
//!   it is kept;
//! - invalid UTF-8 bytes become U+FFFD (one per maximal invalid sequence, as
//!   `String::from_utf8_lossy`);
//! - a raw control character inside a string (invalid JSON) is kept as that character;
//! - NUL (`\u0000`, or a raw 0x00 byte) is **kept**: DuckDB VARCHAR and Parquet strings hold it
//!   byte-exact, so dropping it would change data that both targets can store. (Field *names*
//!   with NUL are a different matter: see `convert::column_name_for`.)
//!
//! Every record the policy touched is reported with what was done ([`Repairs`]); the source logs
//! it once per record with the record's id.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// What the text policy did to one record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Lone surrogate escapes replaced by U+FFFD.
    pub lone_surrogates: u32,
    /// Other invalid escapes replaced by U+FFFD.
    pub bad_escapes: u32,
    /// Invalid UTF-8 sequences replaced by U+FFFD.
    pub invalid_utf8: u32,
    /// Raw control characters in strings, kept (escaped for the parser).
    pub control_chars: u32,
    /// NUL characters, kept.
    pub nul: u32,
}

impl Repairs {
    pub fn is_empty(&self) -> bool {
        *self == Repairs::default()
    }

    /// Whether the record's text differs from what the source sent (U+FFFD replaced something).
    pub fn changed_text(&self) -> bool {
        self.lone_surrogates + self.bad_escapes + self.invalid_utf8 > 0
    }

    fn add(&mut self, fix: Fix) {
        match fix {
            Fix::LoneSurrogate => self.lone_surrogates += 1,
            Fix::BadEscape => self.bad_escapes += 1,
            Fix::InvalidUtf8 => self.invalid_utf8 += 1,
            Fix::Control => self.control_chars += 1,
            Fix::Nul => self.nul += 1,
        }
    }
}

impl std::fmt::Display for Repairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        let mut say = |n: u32, what: &str| {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        };
        say(
            self.lone_surrogates,
            "lone surrogate escape(s) replaced by U+FFFD",
        );
        say(self.bad_escapes, "invalid escape(s) replaced by U+FFFD");
        say(
            self.invalid_utf8,
            "invalid UTF-8 sequence(s) replaced by U+FFFD",
        );
        say(self.control_chars, "raw control character(s) kept");
        say(self.nul, "NUL character(s) kept");
        write!(f, "{}", parts.join(", "))
    }
}

/// One element of a response's `results`.
#[derive(Debug)]
pub enum RawRecord {
    /// A JSON object, with what the text policy did to it (nearly always nothing).
    Object {
        fields: Map<String, Value>,
        repairs: Repairs,
    },
    /// An element that is not a usable JSON object; `raw` is its text (after the text policy).
    Unparsable { raw: String, reason: String },
}

/// A Cerb search response.
#[derive(Debug, Default)]
pub struct Envelope {
    pub status: Option<String>,
    pub error: Option<String>,
    pub message: Option<String>,
    pub results: Option<Vec<RawRecord>>,
    pub total: Option<i64>,
}

#[derive(Deserialize)]
struct Fast {
    #[serde(rename = "__status")]
    status: Option<String>,
    #[serde(rename = "__error")]
    error: Option<String>,
    message: Option<String>,
    #[serde(default)]
    results: Option<Vec<Map<String, Value>>>,
    total: Option<i64>,
}

#[derive(Deserialize)]
struct Lenient<'a> {
    #[serde(rename = "__status")]
    status: Option<String>,
    #[serde(rename = "__error")]
    error: Option<String>,
    message: Option<String>,
    #[serde(default, borrow)]
    results: Option<Vec<&'a RawValue>>,
    total: Option<i64>,
}

/// Parse a response body. Fails only when the body is not a JSON object at all (truncated, HTML);
/// a bad record becomes [`RawRecord::Unparsable`] instead.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, String> {
    let fast_err = match serde_json::from_slice::<Fast>(body) {
        Ok(f) if memchr::memmem::find(body, br"\u0000").is_none() => {
            return Ok(Envelope {
                status: f.status,
                error: f.error,
                message: f.message,
                results: f.results.map(|rs| {
                    rs.into_iter()
                        .map(|fields| RawRecord::Object {
                            fields,
                            repairs: Repairs::default(),
                        })
                        .collect()
                }),
                total: f.total,
            });
        }
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    };
    let (text, fixes) = sanitize(body);
    let env: Lenient<'_> =
        serde_json::from_str(&text).map_err(|e| fast_err.unwrap_or_else(|| e.to_string()))?;
    let base = text.as_ptr() as usize;
    let results = env.results.map(|rs| {
        rs.into_iter()
            .map(|raw| {
                let s = raw.get();
                let start = s.as_ptr() as usize - base;
                let end = start + s.len();
                let from = fixes.partition_point(|(at, _)| *at < start);
                let to = fixes.partition_point(|(at, _)| *at < end);
                let mut repairs = Repairs::default();
                for (_, fix) in &fixes[from..to] {
                    repairs.add(*fix);
                }
                match serde_json::from_str::<Value>(s) {
                    Ok(Value::Object(fields)) => RawRecord::Object { fields, repairs },
                    Ok(other) => RawRecord::Unparsable {
                        raw: s.to_string(),
                        reason: format!("the record is {}, not a JSON object", json_kind(&other)),
                    },
                    Err(e) => RawRecord::Unparsable {
                        raw: s.to_string(),
                        reason: format!("the record is not valid JSON: {e}"),
                    },
                }
            })
            .collect()
    });
    Ok(Envelope {
        status: env.status,
        error: env.error,
        message: env.message,
        results,
        total: env.total,
    })
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fix {
    LoneSurrogate,
    BadEscape,
    InvalidUtf8,
    Control,
    Nul,
}

fn hex4(v: &[u8], at: usize) -> Option<u16> {
    let digits = v.get(at..at + 4)?;
    let s = std::str::from_utf8(digits).ok()?;
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(s, 16).ok()
}

/// The body as valid JSON text under the text policy, with the output offset of every fix (sorted).
/// Structural bytes (quotes, backslashes, control characters) are ASCII, so they never sit inside
/// a multi-byte sequence and slicing at them is always at a character boundary.
fn sanitize(body: &[u8]) -> (String, Vec<(usize, Fix)>) {
    let mut out = String::with_capacity(body.len() + 64);
    let mut fixes = Vec::new();
    let mut in_str = false;
    for chunk in body.utf8_chunks() {
        let s = chunk.valid();
        let v = s.as_bytes();
        let mut run = 0;
        let mut i = 0;
        macro_rules! replace {
            ($skip:expr, $with:expr, $fix:expr) => {{
                out.push_str(&s[run..i]);
                fixes.push((out.len(), $fix));
                out.push_str($with);
                i += $skip;
                run = i;
            }};
        }
        while i < v.len() {
            let b = v[i];
            if !in_str {
                in_str = b == b'"';
                i += 1;
                continue;
            }
            match b {
                b'"' => {
                    in_str = false;
                    i += 1;
                }
                b'\\' => match v.get(i + 1) {
                    Some(b'u') => match hex4(v, i + 2) {
                        Some(0xD800..=0xDBFF) => {
                            let pair = v.get(i + 6) == Some(&b'\\')
                                && v.get(i + 7) == Some(&b'u')
                                && matches!(hex4(v, i + 8), Some(0xDC00..=0xDFFF));
                            if pair {
                                i += 12;
                            } else {
                                replace!(6, "\\ufffd", Fix::LoneSurrogate);
                            }
                        }
                        Some(0xDC00..=0xDFFF) => replace!(6, "\\ufffd", Fix::LoneSurrogate),
                        Some(0) => {
                            fixes.push((out.len() + (i - run), Fix::Nul));
                            i += 6;
                        }
                        Some(_) => i += 6,
                        None => replace!(2, "\\ufffd", Fix::BadEscape),
                    },
                    Some(c) if b"\"\\/bfnrt".contains(c) => i += 2,
                    // A backslash before a character JSON does not escape, or at the end of the
                    // valid text (invalid UTF-8 follows): the backslash becomes U+FFFD.
                    _ => replace!(1, "\\ufffd", Fix::BadEscape),
                },
                0x00 => replace!(1, "\\u0000", Fix::Nul),
                0x01..=0x1F => {
                    let esc = format!("\\u{b:04x}");
                    replace!(1, &esc, Fix::Control)
                }
                _ => i += 1,
            }
        }
        out.push_str(&s[run..]);
        if !chunk.invalid().is_empty() {
            if in_str {
                fixes.push((out.len(), Fix::InvalidUtf8));
            }
            out.push('\u{FFFD}');
        }
    }
    (out, fixes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(body: &[u8]) -> Vec<RawRecord> {
        parse_envelope(body).unwrap().results.unwrap()
    }

    fn object(r: &RawRecord) -> (&Map<String, Value>, Repairs) {
        match r {
            RawRecord::Object { fields, repairs } => (fields, *repairs),
            other => panic!("not an object: {other:?}"),
        }
    }

    fn page(records: &str) -> Vec<u8> {
        format!(r#"{{"__status":"success","results":[{records}],"total":9}}"#).into_bytes()
    }

    #[test]
    fn clean_pages_take_the_fast_path_unchanged() {
        let env = parse_envelope(&page(r#"{"id":1,"s":"caf\u00e9 😀 \ud83d\ude00"}"#)).unwrap();
        assert_eq!(env.status.as_deref(), Some("success"));
        assert_eq!(env.total, Some(9));
        let rs = env.results.unwrap();
        let (f, rep) = object(&rs[0]);
        assert_eq!(f["s"], "café 😀 😀");
        assert!(rep.is_empty());
    }

    #[test]
    fn lone_surrogates_become_replacement_characters_in_that_record_only() {
        let body = page(
            r#"{"id":1,"s":"ok"},{"id":2,"s":"a\ud800b","\udc00k":"\ud800\ud83d\ude00"},{"id":3,"s":"\\ud800"}"#,
        );
        assert!(
            serde_json::from_slice::<Value>(&body).is_err(),
            "serde_json refuses the page"
        );
        let rs = records(&body);
        assert_eq!(rs.len(), 3);
        let (f1, r1) = object(&rs[0]);
        assert_eq!((f1["s"].as_str(), r1.is_empty()), (Some("ok"), true));
        let (f2, r2) = object(&rs[1]);
        assert_eq!(f2["s"], "a\u{FFFD}b");
        assert_eq!(
            f2["\u{FFFD}k"], "\u{FFFD}😀",
            "a pair after a lone surrogate is kept"
        );
        assert_eq!(r2.lone_surrogates, 3);
        assert!(r2.changed_text());
        // An escaped backslash followed by "ud800" is text, not an escape.
        let (f3, r3) = object(&rs[2]);
        assert_eq!(f3["s"], "\\ud800");
        assert!(r3.is_empty());
    }

    #[test]
    fn nul_is_kept_and_reported() {
        let rs = records(&page(r#"{"id":1,"s":"a\u0000b"},{"id":2,"s":"plain"}"#));
        let (f, rep) = object(&rs[0]);
        assert_eq!(f["s"], "a\0b");
        assert_eq!(rep.nul, 1);
        assert!(!rep.changed_text());
        assert!(object(&rs[1]).1.is_empty());
        // A raw NUL byte (invalid JSON) is kept too.
        let mut body = page(r#"{"id":1,"s":"aXb"}"#);
        let x = body.iter().position(|b| *b == b'X').unwrap();
        body[x] = 0;
        let rs = records(&body);
        let (f, rep) = object(&rs[0]);
        assert_eq!(f["s"], "a\0b");
        assert_eq!(rep.nul, 1);
    }

    #[test]
    fn invalid_utf8_bad_escapes_and_control_characters() {
        let mut body = page(r#"{"id":1,"s":"aXXb","t":"\q\u12G4","u":"lineYbreak"}"#);
        let x = body.iter().position(|b| *b == b'X').unwrap();
        body[x] = 0xFF;
        body[x + 1] = 0xC3; // a truncated 2-byte sequence
        let y = body.iter().position(|b| *b == b'Y').unwrap();
        body[y] = b'\n';
        let rs = records(&body);
        let (f, rep) = object(&rs[0]);
        assert_eq!(f["s"], "a\u{FFFD}\u{FFFD}b");
        assert_eq!(f["t"], "\u{FFFD}q\u{FFFD}12G4");
        assert_eq!(f["u"], "line\nbreak");
        assert_eq!(
            (rep.invalid_utf8, rep.bad_escapes, rep.control_chars),
            (2, 2, 1),
            "{rep}"
        );
    }

    #[test]
    fn elements_that_are_not_objects_or_do_not_parse_are_unparsable() {
        let rs = records(&page(r#"{"id":1},7,"x",{"id":2,"n":1e400},{"id":3}"#));
        assert_eq!(rs.len(), 5);
        object(&rs[0]);
        match &rs[1] {
            RawRecord::Unparsable { raw, reason } => {
                assert_eq!(raw, "7");
                assert!(reason.contains("a number"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        match &rs[3] {
            RawRecord::Unparsable { raw, reason } => {
                assert_eq!(raw, r#"{"id":2,"n":1e400}"#);
                assert!(reason.contains("not valid JSON"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        object(&rs[4]);
    }

    #[test]
    fn a_broken_body_is_still_an_error() {
        let body = page(r#"{"id":1}"#);
        assert!(parse_envelope(&body[..body.len() / 2]).is_err());
        assert!(parse_envelope(b"<html>503</html>").is_err());
    }
}
