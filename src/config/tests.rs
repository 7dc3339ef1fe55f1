use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(text: &str, e: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("t.toml"), Path::new("/base"), e)
}

fn problems(text: &str, e: &BTreeMap<String, String>) -> Vec<String> {
    match parse(text, e) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected invalid config, got {other:?}"),
    }
}

#[test]
fn example_config_is_valid_and_documents_defaults() {
    let cfg = parse(EXAMPLE, &env(&[("CERB_TOKEN", "abc")])).unwrap();
    assert_eq!(cfg.source.token.expose(), "abc");
    assert_eq!(cfg.streams.len(), 2);
    let t = cfg.stream("tickets").unwrap();
    assert_eq!(t.cursor, CursorMode::UpdatedId);
    assert_eq!(t.lag, 5);
    assert_eq!(t.page_size, 500);
    assert_eq!(cfg.stream("messages").unwrap().cursor, CursorMode::Id);
    assert_eq!(cfg.warehouse.path, Path::new("/base/warehouse.duckdb"));
    assert_eq!(cfg.lake.url, "file://./lake");
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = r#"
[source]
url = "ftp://x"
token = "literal"
[[streams]]
name = "Bad Name"
record_type = "ticket"
page_size = 1000
[[streams]]
name = "m"
record_type = "message"
cursor = "updated_id"
filter = "status:o OR status:w"
"#;
    let p = problems(text, &env(&[]));
    let joined = p.join("\n");
    assert!(joined.contains("source.url"), "{joined}");
    assert!(joined.contains("source.token"), "{joined}");
    assert!(joined.contains("Bad Name"), "{joined}");
    assert!(joined.contains("page_size"), "{joined}");
    assert!(joined.contains("no `updated` field"), "{joined}");
    assert!(joined.contains("top-level OR"), "{joined}");
    assert!(p.len() >= 6, "{joined}");
}

#[test]
fn unset_variable_is_named() {
    let text = "[source]\nurl = \"http://h\"\ntoken = \"${NOPE}\"\n[[streams]]\nname = \"t\"\nrecord_type = \"ticket\"\n";
    let p = problems(text, &env(&[]));
    assert!(p.iter().any(|x| x.contains("NOPE is not set")), "{p:?}");
}

#[test]
fn secret_never_prints() {
    let cfg = parse(EXAMPLE, &env(&[("CERB_TOKEN", "s3cr3t-value")])).unwrap();
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("s3cr3t-value"), "{dbg}");
    assert!(dbg.contains("***"));
}

#[test]
fn filter_traps_are_caught() {
    assert!(filter_problems("status:o").is_empty());
    assert!(filter_problems("(status:o OR status:w)").is_empty());
    assert!(filter_problems("subject:\"a OR b\"").is_empty());
    assert!(!filter_problems("status:o OR status:w").is_empty());
    assert!(!filter_problems("(status:o").is_empty());
    assert!(!filter_problems("sort:id").is_empty());
    assert!(!filter_problems("limit:5").is_empty());
    assert!(!filter_problems("{{x}}").is_empty());
    assert!(!filter_problems("updated:\"1 to 2\"").is_empty());
}

#[test]
fn unknown_keys_are_rejected() {
    let text = "[source]\nurl = \"http://h\"\ntokn = \"${X}\"\n";
    match parse(text, &env(&[])) {
        Err(ConfigError::Parse { message, .. }) => assert!(message.contains("tokn"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn contact_cursor_field_defaults_to_updated_at() {
    let text = "[source]\nurl = \"http://h\"\ntoken = \"${T}\"\n[[streams]]\nname = \"contacts\"\nrecord_type = \"contact\"\n";
    let cfg = parse(text, &env(&[("T", "x")])).unwrap();
    assert_eq!(cfg.streams[0].cursor_field, "updated_at");
}

#[test]
fn lake_part_size_and_lag_are_bounded() {
    let text = r#"
[source]
url = "http://127.0.0.1:1"
token = "${T}"
[lake]
url = "s3://b/p"
part_size_mib = 2
[[streams]]
name = "tickets"
record_type = "ticket"
lag_secs = 0
"#;
    let p = problems(text, &env(&[("T", "x")]));
    assert!(
        p.iter().any(|m| m.starts_with("lake.part_size_mib")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|m| m.contains("lag_secs: must be at least 1")),
        "{p:?}"
    );
    let ok = parse(
        &text
            .replace("part_size_mib = 2", "part_size_mib = 64")
            .replace("lag_secs = 0", "lag_secs = 1"),
        &env(&[("T", "x")]),
    )
    .unwrap();
    assert_eq!(ok.lake.part_size, 64 * 1024 * 1024);
    let default = parse(
        &text
            .replace("part_size_mib = 2\n", "")
            .replace("lag_secs = 0", ""),
        &env(&[("T", "x")]),
    )
    .unwrap();
    assert_eq!(default.lake.part_size, 10 * 1024 * 1024);
}

#[test]
fn on_bad_record_defaults_to_reject_and_takes_fail() {
    let e = env(&[("CERB_TOKEN", "abc")]);
    assert_eq!(
        parse(EXAMPLE, &e).unwrap().sync.on_bad_record,
        OnBadRecord::Reject
    );
    let base = "[source]\nurl = \"http://x\"\ntoken = \"${CERB_TOKEN}\"\n[[streams]]\nname = \"t\"\nrecord_type = \"ticket\"\n";
    assert_eq!(
        parse(base, &e).unwrap().sync.on_bad_record,
        OnBadRecord::Reject
    );
    let fail = format!("[sync]\non_bad_record = \"fail\"\n{base}");
    assert_eq!(
        parse(&fail, &e).unwrap().sync.on_bad_record,
        OnBadRecord::Fail
    );
    let p = problems(&format!("[sync]\non_bad_record = \"skip\"\n{base}"), &e).join("\n");
    assert!(
        p.contains("sync.on_bad_record") && p.contains("\"skip\""),
        "{p}"
    );
}
