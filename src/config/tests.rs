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
    match &cfg.source.auth {
        SourceAuth::Bearer(t) => assert_eq!(t.expose(), "abc"),
        other => panic!("{other:?}"),
    }
    assert_eq!(cfg.source.max_retry_after, Duration::from_secs(900));
    assert_eq!(cfg.source.requests_per_sec, None);
    assert_eq!(cfg.source.max_retries_per_run, 50);
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
/// The example's commented-out auth tables, uncommented in place of `token`, are valid too.
fn example_with(table: &str) -> String {
    let mut out = String::new();
    let mut on = false;
    for line in EXAMPLE.lines() {
        if line.starts_with("token = ") {
            continue;
        }
        if line.starts_with(&format!("# [{table}]")) {
            on = true;
        } else if line.trim().is_empty() {
            on = false;
        }
        if on {
            out.push_str(line.strip_prefix("# ").unwrap_or(line));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[test]
fn example_oauth2_and_cerb_auth_tables_are_valid() {
    let e = env(&[("CERB_CLIENT_SECRET", "cs-1"), ("CERB_API_SECRET", "api-2")]);
    let cfg = parse(&example_with("source.oauth2"), &e).unwrap();
    match &cfg.source.auth {
        SourceAuth::OAuth2(o) => {
            assert_eq!(o.client_id, "highwater");
            assert_eq!(o.client_secret.expose(), "cs-1");
            assert_eq!(o.refresh_token_file, Path::new("/base/cerb.refresh_token"));
            assert_eq!(o.token_url, "https://cerb.example.com/oauth/access_token");
        }
        other => panic!("{other:?}"),
    }
    let cfg = parse(&example_with("source.cerb_auth"), &e).unwrap();
    match &cfg.source.auth {
        SourceAuth::CerbAuth(c) => {
            assert_eq!(c.access_key, "pjlfmn339fgh");
            assert_eq!(c.secret.expose(), "api-2");
        }
        other => panic!("{other:?}"),
    }
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("api-2") && !dbg.contains("cs-1"), "{dbg}");
}

const STREAM: &str = "[[streams]]\nname = \"t\"\nrecord_type = \"ticket\"\n";

#[test]
fn exactly_one_auth_scheme() {
    let e = env(&[("T", "x"), ("S", "y")]);
    let both = format!(
        "[source]\nurl = \"http://h\"\ntoken = \"${{T}}\"\n[source.cerb_auth]\naccess_key = \"k\"\nsecret = \"${{S}}\"\n{STREAM}"
    );
    let p = problems(&both, &e);
    assert!(p.iter().any(|x| x.contains("exactly one")), "{p:?}");
    let none = format!("[source]\nurl = \"http://h\"\n{STREAM}");
    let p = problems(&none, &e);
    assert!(
        p.iter().any(|x| x.contains("source.token: missing")),
        "{p:?}"
    );
}

#[test]
fn oauth2_defaults_and_literal_secrets() {
    let e = env(&[("S", "y")]);
    let text = format!(
        "[source]\nurl = \"http://h:1/index.php\"\n[source.oauth2]\nclient_id = \"c\"\nclient_secret = \"${{S}}\"\nrefresh_token_file = \"secrets/rt\"\n{STREAM}"
    );
    let cfg = parse(&text, &e).unwrap();
    let SourceAuth::OAuth2(o) = &cfg.source.auth else {
        panic!()
    };
    assert_eq!(o.token_url, "http://h:1/index.php/oauth/access_token");
    assert_eq!(o.refresh_token_file, Path::new("/base/secrets/rt"));
    assert_eq!(cfg.source.auth.describe(), "[source.oauth2]");

    let literal = text.replace("${S}", "plain-secret");
    let p = problems(&literal, &e);
    assert!(
        p.iter()
            .any(|x| x.contains("source.oauth2.client_secret") && x.contains("${VAR}")),
        "{p:?}"
    );
    assert!(p.iter().all(|x| !x.contains("plain-secret")), "{p:?}");
    let missing =
        format!("[source]\nurl = \"http://h\"\n[source.oauth2]\nclient_id = \"c\"\n{STREAM}");
    let p = problems(&missing, &e);
    assert!(
        p.iter().any(|x| x.contains("client_secret: missing")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|x| x.contains("refresh_token_file: missing")),
        "{p:?}"
    );
}

#[test]
fn retry_and_rate_settings() {
    let e = env(&[("T", "x")]);
    let text = format!(
        "[source]\nurl = \"http://h\"\ntoken = \"${{T}}\"\ntimeout_secs = 2\nread_timeout_secs = 5\n\
         backoff_base_secs = 0.01\nbackoff_max_secs = 0.05\nmax_retry_after_secs = 3\nrequests_per_sec = 2.5\n\
         max_retries_per_run = 7\n{STREAM}"
    );
    let cfg = parse(&text, &e).unwrap();
    let s = &cfg.source;
    assert_eq!(s.timeout, Duration::from_secs(2));
    assert_eq!(
        s.read_timeout,
        Duration::from_secs(2),
        "clamped to the whole-request timeout"
    );
    assert_eq!(s.backoff_base, Duration::from_millis(10));
    assert_eq!(s.max_retry_after, Duration::from_secs(3));
    assert_eq!(s.requests_per_sec, Some(2.5));
    assert_eq!(s.max_retries_per_run, 7);
    let bad = text
        .replace("requests_per_sec = 2.5", "requests_per_sec = -1")
        .replace("backoff_max_secs = 0.05", "backoff_max_secs = 0.001");
    let p = problems(&bad, &e);
    assert!(p.iter().any(|x| x.contains("requests_per_sec")), "{p:?}");
    assert!(p.iter().any(|x| x.contains("backoff_max_secs")), "{p:?}");
}

#[test]
fn a_source_url_ending_in_rest_is_refused() {
    let text = "[source]\nurl = \"http://h/rest/\"\ntoken = \"${T}\"\n[[streams]]\nname = \"t\"\nrecord_type = \"ticket\"\n";
    let p = problems(text, &env(&[("T", "x")]));
    assert!(p.iter().any(|m| m.contains("ends in /rest")), "{p:?}");
}

#[test]
fn offline_loading_needs_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.toml");
    let text = "[source]\nurl = \"http://h\"\ntoken = \"${HIGHWATER_TEST_UNSET_TOKEN}\"\n[[streams]]\nname = \"t\"\nrecord_type = \"ticket\"\n";
    std::fs::write(&path, text).unwrap();
    assert!(Config::load(&path).is_err());
    let cfg = Config::load_offline(&path).unwrap();
    assert_eq!(cfg.streams[0].name, "t");
}

#[test]
fn reserved_names_and_absurd_durations_are_refused() {
    let text = "[source]\nurl = \"http://h\"\ntoken = \"${T}\"\ntimeout_secs = 1e300\n[warehouse]\nlock_wait_secs = 1e30\n[[streams]]\nname = \"_hw_stage\"\nrecord_type = \"ticket\"\n";
    let p = problems(text, &env(&[("T", "x")])).join("\n");
    assert!(p.contains("\"_hw_stage\" is reserved"), "{p}");
    assert!(p.contains("warehouse.lock_wait_secs"), "{p}");
    assert!(p.contains("source.timeout_secs"), "{p}");
}
