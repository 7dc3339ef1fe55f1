use super::*;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use proptest::prelude::*;
use serde_json::{Map, json};

fn rec(id: i64, v: Value) -> Record {
    let Value::Object(fields) = v else {
        panic!("test record must be an object")
    };
    Record {
        id,
        updated: 0,
        fields,
    }
}

fn sys() -> SystemValues {
    SystemValues {
        run_id: "run-1".into(),
        synced_at_micros: 1_700_000_000_000_000,
        op: Op::Upsert,
    }
}

/// The value stored at (`column`, `row`), read back into JSON: NULL → `None`, text as a string.
fn cell(batch: &RecordBatch, column: &str, row: usize) -> Option<Value> {
    let array = batch.column_by_name(column)?;
    if array.is_null(row) {
        return Some(Value::Null);
    }
    Some(match array.data_type() {
        DataType::Boolean => json!(array.as_boolean().value(row)),
        DataType::Int64 => json!(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => json!(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => json!(array.as_string::<i32>().value(row)),
        other => panic!("unexpected type {other}"),
    })
}

fn coltype(batch: &RecordBatch, column: &str) -> ColType {
    let field = batch.schema().field_with_name(column).unwrap().clone();
    ColType::parse(&field.metadata()[COLTYPE_METADATA_KEY]).unwrap()
}

fn change<'a>(changes: &'a [SchemaChange], column: &str) -> &'a SchemaChange {
    changes
        .iter()
        .find(|c| c.column == column)
        .unwrap_or_else(|| panic!("no change for {column} in {changes:?}"))
}

#[test]
fn int_then_float_widens_to_float64_and_writes_ints_as_doubles() {
    let mut conv = Converter::new(TableSchema::default());
    let (b1, ch1) = conv
        .convert(&[rec(1, json!({"spam_score": 0}))], &sys())
        .unwrap();
    assert_eq!(coltype(&b1, "spam_score"), ColType::Int64);
    assert_eq!(change(&ch1, "spam_score").from, None);
    assert_eq!(change(&ch1, "id").to, ColType::Int64);

    let batch = [
        rec(2, json!({"spam_score": 0})),
        rec(3, json!({"spam_score": 0.0001})),
    ];
    let (b2, ch2) = conv.convert(&batch, &sys()).unwrap();
    let c = change(&ch2, "spam_score");
    assert_eq!((c.from, c.to), (Some(ColType::Int64), ColType::Float64));
    assert!(c.reason.contains("record 3") && c.reason.contains("float"));
    let col = b2.column_by_name("spam_score").unwrap();
    assert_eq!(col.data_type(), &DataType::Float64);
    let f = col.as_primitive::<Float64Type>();
    assert_eq!((f.value(0), f.value(1)), (0.0, 0.0001));
    assert_eq!(
        conv.schema().get("spam_score").unwrap().ty,
        ColType::Float64
    );
}

#[test]
fn int_then_string_widens_to_utf8_and_later_ints_are_their_text() {
    let mut conv = Converter::new(TableSchema::default());
    conv.convert(&[rec(1, json!({"elapsed": 42}))], &sys())
        .unwrap();
    let (b, ch) = conv
        .convert(&[rec(2, json!({"elapsed": "17"}))], &sys())
        .unwrap();
    let c = change(&ch, "elapsed");
    assert_eq!((c.from, c.to), (Some(ColType::Int64), ColType::Utf8));
    assert!(c.reason.contains("record 2") && c.reason.contains("string"));
    assert_eq!(cell(&b, "elapsed", 0), Some(json!("17")));
    let (b, ch) = conv
        .convert(
            &[
                rec(3, json!({"elapsed": 42})),
                rec(4, json!({"elapsed": 5.7})),
                rec(5, json!({"elapsed": true})),
            ],
            &sys(),
        )
        .unwrap();
    assert!(ch.is_empty(), "{ch:?}");
    assert_eq!(cell(&b, "elapsed", 0), Some(json!("42")));
    assert_eq!(cell(&b, "elapsed", 1), Some(json!("5.7")));
    assert_eq!(cell(&b, "elapsed", 2), Some(json!("true")));
}

#[test]
fn float_column_refuses_inexact_ints_and_int_column_with_huge_ints_refuses_floats() {
    let big = (1_i64 << 60) + 1;
    let mut conv = Converter::new(TableSchema::default());
    let (b, _) = conv
        .convert(
            &[rec(1, json!({"n": big})), rec(2, json!({"n": 3}))],
            &sys(),
        )
        .unwrap();
    assert_eq!(cell(&b, "n", 0), Some(json!(big)), "2^60+1 stays exact");
    // A later float cannot make the column float64: 2^60+1 would round.
    let (b, ch) = conv.convert(&[rec(3, json!({"n": 0.5}))], &sys()).unwrap();
    assert_eq!(change(&ch, "n").to, ColType::Utf8);
    assert_eq!(cell(&b, "n", 0), Some(json!("0.5")));

    let mut conv = Converter::new(TableSchema::default());
    let (b, ch) = conv
        .convert(
            &[rec(1, json!({"x": 0.5})), rec(2, json!({"x": big}))],
            &sys(),
        )
        .unwrap();
    assert_eq!(change(&ch, "x").to, ColType::Utf8);
    assert_eq!(cell(&b, "x", 0), Some(json!("0.5")));
    assert_eq!(cell(&b, "x", 1), Some(json!(big.to_string())));
}

#[test]
fn integers_beyond_i64_become_text_with_every_digit() {
    let mut conv = Converter::new(TableSchema::default());
    let (b, ch) = conv
        .convert(
            &[rec(1, json!({"u": 7})), rec(2, json!({"u": u64::MAX}))],
            &sys(),
        )
        .unwrap();
    assert_eq!(change(&ch, "u").to, ColType::Utf8);
    assert_eq!(cell(&b, "u", 0), Some(json!("7")));
    assert_eq!(cell(&b, "u", 1), Some(json!(u64::MAX.to_string())));
}

#[test]
fn new_field_in_a_later_batch_is_appended_and_absent_columns_are_null() {
    let mut conv = Converter::new(TableSchema::default());
    conv.convert(&[rec(1, json!({"b": 1, "a": "x"}))], &sys())
        .unwrap();
    let (b, ch) = conv
        .convert(&[rec(2, json!({"c": false, "a": "y"}))], &sys())
        .unwrap();
    assert_eq!(ch.len(), 1);
    assert_eq!(
        (ch[0].column.as_str(), ch[0].from, ch[0].to),
        ("c", None, ColType::Bool)
    );
    let names: Vec<String> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut expected: Vec<String> = ["id", "b", "a", "c"].map(String::from).to_vec();
    expected.extend(SYSTEM_COLUMNS.iter().map(|(n, _)| n.to_string()));
    assert_eq!(names, expected);
    assert_eq!(cell(&b, "b", 0), Some(Value::Null), "absent column is null");
    assert_eq!(cell(&b, "c", 0), Some(json!(false)));
    assert_eq!(conv.arrow_schema(), b.schema());
}

#[test]
fn objects_and_arrays_are_json_text_and_scalars_turn_json_into_utf8() {
    let mut conv = Converter::new(TableSchema::default());
    let nested = json!({"k": [1, {"z": "é", "a": null}], "b": 2.5});
    let (b, ch) = conv
        .convert(
            &[
                rec(1, json!({"custom": nested.clone(), "tags": ["a", "b"]})),
                rec(2, json!({"custom": {}, "tags": []})),
            ],
            &sys(),
        )
        .unwrap();
    assert_eq!(change(&ch, "custom").to, ColType::Json);
    assert_eq!(coltype(&b, "tags"), ColType::Json);
    // Source key order is kept in the text (serde_json preserve_order).
    assert_eq!(
        cell(&b, "custom", 0),
        Some(json!(r#"{"k":[1,{"z":"é","a":null}],"b":2.5}"#))
    );
    assert_eq!(cell(&b, "tags", 1), Some(json!("[]")));

    let (b, ch) = conv
        .convert(&[rec(3, json!({"tags": "plain"}))], &sys())
        .unwrap();
    let c = change(&ch, "tags");
    assert_eq!((c.from, c.to), (Some(ColType::Json), ColType::Utf8));
    assert_eq!(cell(&b, "tags", 0), Some(json!("plain")));
}

#[test]
fn empty_string_null_and_missing_key_stay_distinct() {
    let mut conv = Converter::new(TableSchema::default());
    let (b, _) = conv
        .convert(
            &[
                rec(1, json!({"s": ""})),
                rec(2, json!({"s": null})),
                rec(3, json!({})),
                rec(4, json!({"s": "N"})),
            ],
            &sys(),
        )
        .unwrap();
    let s = b.column_by_name("s").unwrap().as_string::<i32>();
    assert!(s.is_valid(0) && s.value(0).is_empty());
    assert!(s.is_null(1) && s.is_null(2));
    assert_eq!(s.value(3), "N");
}

#[test]
fn all_null_new_field_creates_no_column_until_a_value_arrives() {
    let mut conv = Converter::new(TableSchema::default());
    let (b, ch) = conv
        .convert(&[rec(1, json!({"later": null}))], &sys())
        .unwrap();
    assert!(b.column_by_name("later").is_none());
    assert!(ch.iter().all(|c| c.column != "later"));
    let (b, ch) = conv
        .convert(
            &[rec(2, json!({"later": null})), rec(3, json!({"later": 9}))],
            &sys(),
        )
        .unwrap();
    assert_eq!(change(&ch, "later").to, ColType::Int64);
    assert_eq!(cell(&b, "later", 0), Some(Value::Null));
    assert_eq!(cell(&b, "later", 1), Some(json!(9)));
}

#[test]
fn unicode_is_byte_exact_in_values_and_names() {
    let text =
        "😀 emoji, 中文字符, é vs e\u{301}, \u{0}nul, \u{FEFF}bom, \u{1F468}\u{200D}\u{1F469}";
    let mut conv = Converter::new(TableSchema::default());
    let (b, _) = conv
        .convert(&[rec(1, json!({"名前 😀": text}))], &sys())
        .unwrap();
    let got = b.column_by_name("名前 😀").unwrap().as_string::<i32>();
    assert_eq!(got.value(0).as_bytes(), text.as_bytes());
}

#[test]
fn id_comes_from_the_record_even_when_the_json_id_is_a_string() {
    let mut conv = Converter::new(TableSchema::default());
    let (b, ch) = conv
        .convert(
            &[
                rec(17, json!({"id": "17", "x": 1})),
                rec(18, json!({"x": 2, "id": "18"})),
            ],
            &sys(),
        )
        .unwrap();
    assert_eq!(b.schema().field(0).name(), "id");
    assert!(!b.schema().field(0).is_nullable());
    let ids = b.column(0).as_primitive::<Int64Type>();
    assert_eq!(ids.values().to_vec(), vec![17, 18]);
    assert_eq!(change(&ch, "id").to, ColType::Int64);
    // The JSON id still counts for the content hash.
    let hashes = b.column_by_name("_hw_hash").unwrap();
    assert_eq!(
        hashes.as_primitive::<Int64Type>().value(0),
        content_hash(&rec(17, json!({"id": "17", "x": 1})).fields)
    );
}

#[test]
fn system_columns_follow_the_source_columns_with_the_given_values() {
    let mut conv = Converter::new(TableSchema::default());
    let r = rec(5, json!({"a": 1}));
    let s = SystemValues {
        run_id: "r-42".into(),
        synced_at_micros: 123_456,
        op: Op::Repair,
    };
    let (b, _) = conv.convert(std::slice::from_ref(&r), &s).unwrap();
    let schema = b.schema();
    let tail: Vec<(&str, DataType)> = schema.fields()[2..]
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone()))
        .collect();
    let expected: Vec<(&str, DataType)> = SYSTEM_COLUMNS
        .iter()
        .map(|(n, t)| (*n, arrow_type(*t)))
        .collect();
    assert_eq!(tail, expected);
    assert_eq!(cell(&b, "_hw_run_id", 0), Some(json!("r-42")));
    assert_eq!(cell(&b, "_hw_op", 0), Some(json!("repair")));
    let ts = b.column_by_name("_hw_synced_at").unwrap();
    assert_eq!(
        ts.as_primitive::<TimestampMicrosecondType>().value(0),
        123_456
    );
    assert_eq!(
        cell(&b, "_hw_hash", 0),
        Some(json!(content_hash(&r.fields)))
    );
}

#[test]
fn existing_schema_keeps_its_order_and_empty_batches_work() {
    let existing = TableSchema {
        columns: vec![
            Column::new("id", ColType::Int64),
            Column::new("z", ColType::Float64),
            Column::new("a", ColType::Json),
        ],
    };
    let mut conv = Converter::new(existing.clone());
    let (b, ch) = conv.convert(&[], &sys()).unwrap();
    assert!(ch.is_empty());
    assert_eq!(b.num_rows(), 0);
    let (b, ch) = conv
        .convert(&[rec(1, json!({"a": [1], "new": "n", "z": 3}))], &sys())
        .unwrap();
    assert_eq!(ch.len(), 1);
    assert_eq!(cell(&b, "z", 0), Some(json!(3.0)));
    let order: Vec<&str> = conv
        .schema()
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(order, ["id", "z", "a", "new"]);
}

#[test]
fn bad_schemas_are_errors_that_change_nothing() {
    let bad = TableSchema {
        columns: vec![Column::new("x", ColType::Utf8)],
    };
    let mut conv = Converter::new(bad.clone());
    let err = conv.convert(&[rec(1, json!({}))], &sys()).unwrap_err();
    assert!(matches!(err, ConvertError::BadSchema { .. }), "{err}");
    assert_eq!(conv.schema(), &bad);
}

/// Field names that are not identifiers become columns: kept as sent where DuckDB can hold them
/// apart, renamed by the documented rule where it cannot, and the rename is recorded.
#[test]
fn weird_field_names_become_columns_by_the_naming_rule() {
    let long = "x".repeat(200);
    let mut conv = Converter::new(TableSchema::default());
    let fields = json!({
        "subject": "lower",
        "Subject": "upper",
        "SUBJECT": "shout",
        "with space": 1,
        "quote\"d": 2,
        "it's": 3,
        "select": 4,
        "order": 5,
        long.clone(): 6,
        "_hw_op": "source op",
        "_HW_new": 7,
        "": 8,
        "nul\u{0}name": 9,
        "ID": 10,
        "rowid": 11,
        "Synced_Date": 12,
    });
    let (b, ch) = conv.convert(&[rec(1, fields)], &sys()).unwrap();
    let name_of = |field: &str| {
        conv.schema()
            .columns
            .iter()
            .find(|c| c.source_field() == field)
            .unwrap_or_else(|| panic!("no column for {field:?}"))
            .name
            .clone()
    };
    for kept in [
        "subject",
        "with space",
        "quote\"d",
        "it's",
        "select",
        "order",
        long.as_str(),
    ] {
        assert_eq!(name_of(kept), kept);
        assert!(
            conv.schema()
                .columns
                .iter()
                .any(|c| c.name == kept && c.field.is_none())
        );
    }
    assert_eq!(name_of("Subject"), "Subject__2");
    assert_eq!(name_of("SUBJECT"), "SUBJECT__3");
    assert_eq!(name_of("_hw_op"), "src_hw_op");
    assert_eq!(name_of("_HW_new"), "src_HW_new");
    assert_eq!(name_of(""), "_");
    assert_eq!(name_of("nul\u{0}name"), "nul\u{FFFD}name");
    assert_eq!(name_of("ID"), "ID__2");
    assert_eq!(name_of("rowid"), "rowid__2");
    assert_eq!(name_of("Synced_Date"), "Synced_Date__2");
    assert_eq!(cell(&b, "Subject__2", 0), Some(json!("upper")));
    assert_eq!(cell(&b, "SUBJECT__3", 0), Some(json!("shout")));
    assert_eq!(cell(&b, "src_hw_op", 0), Some(json!("source op")));
    assert_eq!(
        cell(&b, "_hw_op", 0),
        Some(json!("upsert")),
        "the system column is untouched"
    );
    assert_eq!(cell(&b, &long, 0), Some(json!(6)));
    // No two columns (system columns included) are equal after case folding.
    let mut folded: Vec<String> = b.schema().fields().iter().map(|f| fold(f.name())).collect();
    let n = folded.len();
    folded.sort();
    folded.dedup();
    assert_eq!(folded.len(), n, "{:?}", b.schema());
    // The renames are recorded with their reason, and lake readers see the source name.
    let c = change(&ch, "Subject__2");
    assert!(
        c.reason.contains("\"Subject\"") && c.reason.contains("case is ignored"),
        "{}",
        c.reason
    );
    assert!(change(&ch, "src_hw_op").reason.contains("reserved"));
    let f = b.schema().field_with_name("Subject__2").unwrap().clone();
    assert_eq!(f.metadata()[FIELD_METADATA_KEY], "Subject");
    assert!(
        !b.schema()
            .field_with_name("subject")
            .unwrap()
            .metadata()
            .contains_key(FIELD_METADATA_KEY)
    );
}

/// The field → column mapping is part of the saved schema: a later run (a new converter from
/// the stored schema) puts `Subject` into the same column, and a literal `Subject__2` field that
/// arrives later does not take it over.
#[test]
fn renamed_columns_keep_their_field_across_runs() {
    let mut conv = Converter::new(TableSchema::default());
    conv.convert(&[rec(1, json!({"subject": "a", "Subject": "b"}))], &sys())
        .unwrap();
    let saved = serde_json::to_string(conv.schema()).unwrap();
    assert!(saved.contains("\"field\":\"Subject\""), "{saved}");
    let plain = serde_json::to_string(&TableSchema {
        columns: vec![Column::new("id", ColType::Int64)],
    })
    .unwrap();
    assert!(
        !plain.contains("field"),
        "unrenamed columns carry no field: {plain}"
    );

    let mut next = Converter::new(serde_json::from_str(&saved).unwrap());
    let (b, ch) = next
        .convert(
            &[rec(
                2,
                json!({"Subject": "c", "subject": "d", "Subject__2": "e"}),
            )],
            &sys(),
        )
        .unwrap();
    assert_eq!(cell(&b, "Subject__2", 0), Some(json!("c")));
    assert_eq!(cell(&b, "subject", 0), Some(json!("d")));
    assert_eq!(cell(&b, "Subject__2__2", 0), Some(json!("e")));
    assert_eq!(ch.len(), 1, "{ch:?}");
}

// ---- property test: every value round-trips ----

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        (-1000_i64..1000).prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        (-10.0_f64..10.0).prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-c]", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn record() -> impl Strategy<Value = Map<String, Value>> {
    // Few key names so that columns meet many kinds of values and widen.
    prop::collection::vec(("k[0-4]|id|é😀", value()), 0..6)
        .prop_map(|kv| kv.into_iter().collect::<Map<String, Value>>())
}

/// Checks that `got` (read back from a column of logical type `ty`) is `orig`, exactly.
fn assert_round_trip(orig: &Value, got: &Value, ty: ColType) -> Result<(), TestCaseError> {
    if orig.is_null() {
        prop_assert!(got.is_null(), "null became {got}");
        return Ok(());
    }
    match ty {
        ColType::Bool | ColType::Int64 => prop_assert_eq!(got, orig),
        ColType::Float64 => {
            let g = got.as_f64().unwrap();
            prop_assert_eq!(Some(g), orig.as_f64());
            if let Some(i) = orig.as_i64() {
                prop_assert_eq!(g as i64, i, "int {} rounded in a float64 column", i);
            }
        }
        ColType::Utf8 => {
            let text = match orig {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            prop_assert_eq!(got, &Value::String(text));
        }
        ColType::Json => {
            // Compared as text: serde_json without `float_roundtrip` may parse a float's shortest
            // text to a neighbouring double, so parsing back would blame the converter wrongly.
            prop_assert!(orig.is_object() || orig.is_array());
            prop_assert_eq!(got, &Value::String(orig.to_string()));
        }
        ColType::TimestampUtc => prop_assert!(false, "no source column is a timestamp"),
    }
    Ok(())
}

proptest! {
    #[test]
    fn every_value_round_trips(batches in prop::collection::vec(
        prop::collection::vec(record(), 0..8), 1..4)) {
        let mut conv = Converter::new(TableSchema::default());
        let mut id = 0;
        for batch in batches {
            let records: Vec<Record> = batch
                .into_iter()
                .map(|fields| {
                    id += 1;
                    Record { id, updated: 0, fields }
                })
                .collect();
            let (b, _) = conv.convert(&records, &sys()).unwrap();
            prop_assert_eq!(b.num_rows(), records.len());
            prop_assert_eq!(b.schema(), conv.arrow_schema());
            for (row, r) in records.iter().enumerate() {
                prop_assert_eq!(cell(&b, "id", row), Some(json!(r.id)));
                prop_assert_eq!(cell(&b, "_hw_hash", row), Some(json!(content_hash(&r.fields))));
                for (k, v) in &r.fields {
                    if k == "id" {
                        continue;
                    }
                    match cell(&b, k, row) {
                        None => prop_assert!(v.is_null(), "column {} missing for {}", k, v),
                        Some(got) => assert_round_trip(v, &got, coltype(&b, k))?,
                    }
                }
                // Columns the record does not mention are NULL.
                for f in b.schema().fields() {
                    let name = f.name();
                    if name != "id" && !name.starts_with("_hw_") && !r.fields.contains_key(name) {
                        prop_assert_eq!(cell(&b, name, row), Some(Value::Null));
                    }
                }
            }
        }
    }
}
