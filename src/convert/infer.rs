//! The widening policy: which column type a JSON value needs, given the type the column has now.
//!
//! Kept apart from the array building so the whole policy of DESIGN.md §4 reads in one place:
//! `int → float64` only while every integer is exact in a double (|i| ≤ 2^53), anything else that
//! does not fit becomes `utf8`; objects and arrays are `json` until a scalar joins them.

use crate::model::ColType;
use serde_json::Value;

/// The largest magnitude an integer may have and still be written to a double without rounding.
pub(crate) const MAX_EXACT_INT: u64 = 1 << 53;

/// What a JSON value is, as far as column typing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Bool,
    /// Fits in `i64`; `exact` when it also converts to `f64` without rounding.
    Int {
        exact: bool,
    },
    /// An integer above `i64::MAX` (serde_json keeps it as `u64`): only text keeps it.
    BigInt,
    Float,
    Str,
    /// An object or an array.
    Json,
}

impl Kind {
    pub(crate) fn of(v: &Value) -> Kind {
        match v {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Kind::Int {
                        exact: i.unsigned_abs() <= MAX_EXACT_INT,
                    }
                } else if n.is_u64() {
                    Kind::BigInt
                } else {
                    Kind::Float
                }
            }
            Value::String(_) => Kind::Str,
            Value::Array(_) | Value::Object(_) => Kind::Json,
        }
    }

    /// The word used in schema-change reasons.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Int { exact: true } => "an integer",
            Kind::Int { exact: false } => "an integer beyond 2^53",
            Kind::BigInt => "an integer beyond i64",
            Kind::Float => "a float",
            Kind::Str => "a string",
            Kind::Json => "an object or array",
        }
    }
}

/// The type a column must have to hold everything it held (`current`) plus a value of `kind`.
///
/// `inexact_ints` says whether the column has seen an integer that a double cannot hold exactly;
/// such a column can never become `float64`. `TimestampUtc` is a system-column type that the
/// source never produces: a source value arriving in such a column is kept as text.
pub(crate) fn widen(current: Option<ColType>, kind: Kind, inexact_ints: bool) -> Option<ColType> {
    use ColType::*;
    let to = match (current, kind) {
        (cur, Kind::Null) => return cur,
        (None, Kind::Bool) => Bool,
        (None, Kind::Int { .. }) => Int64,
        (None, Kind::Float) => Float64,
        (None, Kind::Json) => Json,
        (None, Kind::BigInt | Kind::Str) => Utf8,
        (Some(Bool), Kind::Bool) => Bool,
        (Some(Int64), Kind::Int { .. }) => Int64,
        (Some(Int64), Kind::Float) if !inexact_ints => Float64,
        (Some(Float64), Kind::Float | Kind::Int { exact: true }) => Float64,
        (Some(Json), Kind::Json) => Json,
        _ => Utf8,
    };
    Some(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_follow_json_types_and_integer_exactness() {
        assert_eq!(Kind::of(&json!(null)), Kind::Null);
        assert_eq!(Kind::of(&json!(true)), Kind::Bool);
        assert_eq!(Kind::of(&json!(1_i64 << 53)), Kind::Int { exact: true });
        assert_eq!(
            Kind::of(&json!(-(1_i64 << 53) - 1)),
            Kind::Int { exact: false }
        );
        assert_eq!(Kind::of(&json!(u64::MAX)), Kind::BigInt);
        assert_eq!(Kind::of(&json!(0.5)), Kind::Float);
        assert_eq!(Kind::of(&json!("")), Kind::Str);
        assert_eq!(Kind::of(&json!([])), Kind::Json);
        assert_eq!(Kind::of(&json!({})), Kind::Json);
    }

    #[test]
    fn widening_is_monotone_and_never_narrows() {
        use ColType::*;
        let int = Kind::Int { exact: true };
        assert_eq!(widen(Some(Int64), Kind::Float, false), Some(Float64));
        assert_eq!(widen(Some(Int64), Kind::Float, true), Some(Utf8));
        assert_eq!(widen(Some(Float64), int, false), Some(Float64));
        assert_eq!(
            widen(Some(Float64), Kind::Int { exact: false }, false),
            Some(Utf8)
        );
        assert_eq!(widen(Some(Int64), Kind::Str, false), Some(Utf8));
        assert_eq!(widen(Some(Bool), int, false), Some(Utf8));
        assert_eq!(widen(Some(Int64), Kind::Bool, false), Some(Utf8));
        assert_eq!(widen(Some(Json), Kind::Str, false), Some(Utf8));
        assert_eq!(widen(Some(Int64), Kind::BigInt, false), Some(Utf8));
        assert_eq!(widen(Some(Utf8), Kind::Json, false), Some(Utf8));
        assert_eq!(widen(Some(Float64), Kind::Null, false), Some(Float64));
        assert_eq!(widen(None, Kind::Null, false), None);
        // Every kind keeps a utf8 column utf8: text is the top of the lattice.
        for k in [
            Kind::Bool,
            int,
            Kind::BigInt,
            Kind::Float,
            Kind::Str,
            Kind::Json,
        ] {
            assert_eq!(widen(Some(Utf8), k, true), Some(Utf8));
        }
    }
}
