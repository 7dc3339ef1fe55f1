//! Configuration: one TOML file, read as raw data, then validated without any I/O into a [`Config`].
//!
//! Validation reports every problem at once (a user fixing a config should not play whack-a-mole), and
//! secrets only ever come from `${VAR}` references so that the file itself can be committed.

mod secret;

pub use secret::Secret;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::CursorMode;

/// The file `highwater init` writes; a test parses it so that every documented key stays valid.
pub const EXAMPLE: &str = include_str!("example.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} has {} problem(s):\n{}", .problems.len(), .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

// ---------------------------------------------------------------------------------------------
// Raw: exactly what the file says.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    source: Option<RawSource>,
    #[serde(default)]
    lake: RawLake,
    #[serde(default)]
    warehouse: RawWarehouse,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    streams: Vec<RawStream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: Option<String>,
    url: Option<String>,
    token: Option<String>,
    oauth2: Option<RawOAuth2>,
    cerb_auth: Option<RawCerbAuth>,
    timeout_secs: Option<f64>,
    read_timeout_secs: Option<f64>,
    max_retries: Option<u32>,
    max_retries_per_run: Option<u32>,
    backoff_base_secs: Option<f64>,
    backoff_max_secs: Option<f64>,
    max_retry_after_secs: Option<f64>,
    requests_per_sec: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth2 {
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token_file: Option<String>,
    token_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCerbAuth {
    access_key: Option<String>,
    secret: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLake {
    url: Option<String>,
    part_size_mib: Option<u64>,
    #[serde(default)]
    options: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWarehouse {
    path: Option<String>,
    lock_wait_secs: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    checkpoint_rows: Option<usize>,
    checkpoint_secs: Option<f64>,
    on_bad_record: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    name: Option<String>,
    record_type: Option<String>,
    cursor: Option<String>,
    cursor_field: Option<String>,
    filter: Option<String>,
    lag_secs: Option<i64>,
    page_size: Option<u32>,
}

// ---------------------------------------------------------------------------------------------
// Validated: what the program runs with.

#[derive(Clone, Debug)]
pub struct Config {
    /// The folder relative paths are resolved against (the config file's folder).
    pub base_dir: PathBuf,
    pub source: SourceConfig,
    pub lake: LakeConfig,
    pub warehouse: WarehouseConfig,
    pub sync: SyncConfig,
    pub streams: Vec<StreamConfig>,
}

#[derive(Clone, Debug)]
pub struct SourceConfig {
    pub url: String,
    pub auth: SourceAuth,
    /// Whole request, connect to last body byte.
    pub timeout: Duration,
    /// Longest silence while waiting for the head or any part of the body (a stalled server).
    pub read_timeout: Duration,
    /// Retries of one request for transient failures.
    pub max_retries: u32,
    /// Retries one run (one stream's sync) may spend in total.
    pub max_retries_per_run: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A `Retry-After` above this ends the run as rate-limited instead of sleeping.
    pub max_retry_after: Duration,
    /// Client-side request rate; `None` = unlimited.
    pub requests_per_sec: Option<f64>,
}

/// How requests are authenticated: exactly one scheme per source (CERB_API.md §2).
#[derive(Clone, Debug)]
pub enum SourceAuth {
    /// `Authorization: Bearer <token>`: a long-lived token minted by an admin.
    Bearer(Secret),
    /// OAuth2 access tokens obtained with a rotating refresh token kept in a file.
    OAuth2(OAuth2Config),
    /// The legacy `Cerb-Auth` md5 request signature.
    CerbAuth(CerbAuthConfig),
}

#[derive(Clone, Debug)]
pub struct OAuth2Config {
    pub client_id: String,
    pub client_secret: Secret,
    /// Holds the current refresh token; rewritten atomically (mode 0600) at every rotation.
    pub refresh_token_file: PathBuf,
    pub token_url: String,
}

#[derive(Clone, Debug)]
pub struct CerbAuthConfig {
    pub access_key: String,
    pub secret: Secret,
}

impl SourceAuth {
    /// The config key to point users at when the server refuses the credentials.
    pub fn describe(&self) -> &'static str {
        match self {
            SourceAuth::Bearer(_) => "source.token",
            SourceAuth::OAuth2(_) => "[source.oauth2]",
            SourceAuth::CerbAuth(_) => "[source.cerb_auth]",
        }
    }
}

#[derive(Clone, Debug)]
pub struct LakeConfig {
    pub url: String,
    pub options: Vec<(String, String)>,
    /// Multipart part size; files up to this size are written with one conditional put.
    pub part_size: usize,
}

#[derive(Clone, Debug)]
pub struct WarehouseConfig {
    pub path: PathBuf,
    pub lock_wait: Duration,
}

#[derive(Clone, Debug)]
pub struct SyncConfig {
    pub checkpoint_rows: usize,
    pub checkpoint_interval: Duration,
    pub on_bad_record: OnBadRecord,
}

/// What a sync does with a record it cannot load (no usable `id`, not a JSON object).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnBadRecord {
    /// Keep it whole in `highwater.rejects` (committed with the checkpoint that passes it), log a
    /// warning and go on: one broken record does not stop a help desk's sync.
    #[default]
    Reject,
    /// Fail the run at the page holding it; that page commits nothing, the cursor stays before it.
    Fail,
}

#[derive(Clone, Debug)]
pub struct StreamConfig {
    pub name: String,
    pub record_type: String,
    pub cursor: CursorMode,
    /// The record key holding the change timestamp (`updated`, `updated_at` for contacts).
    pub cursor_field: String,
    /// Extra Cerb query text ANDed into every search (e.g. `status:o`), already checked for traps.
    pub filter: String,
    pub lag: i64,
    pub page_size: u32,
}

impl fmt::Display for StreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.record_type)
    }
}

/// Record types whose records carry no change timestamp: they can only be walked by `id`.
pub fn is_append_only(record_type: &str) -> bool {
    matches!(
        record_type,
        "message" | "comment" | "activity_log" | "notification"
    )
}

/// The record key that holds the change timestamp for a Cerb record type.
pub fn default_cursor_field(record_type: &str) -> &'static str {
    match record_type {
        "contact" | "bucket" => "updated_at",
        _ => "updated",
    }
}

impl Config {
    /// Read and validate a config file. The only I/O is reading the file and the environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Config::parse(&text, path, &base_dir, &env)
    }

    /// Like [`Config::load`], for commands that never contact the source (`status`, `query`):
    /// a `${VAR}` that is not set stands for a placeholder instead of failing, so reading the
    /// warehouse needs no source secrets in the environment.
    pub fn load_offline(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut env: BTreeMap<String, String> = std::env::vars().collect();
        let mut rest = text.as_str();
        while let Some(pos) = rest.find("${") {
            let after = &rest[pos + 2..];
            let Some(end) = after.find('}') else { break };
            env.entry(after[..end].to_string())
                .or_insert_with(|| "unset".to_string());
            rest = &after[end..];
        }
        Config::parse(&text, path, &base_dir, &env)
    }

    /// Parse and validate TOML text. Pure: the environment is passed in.
    pub fn parse(
        text: &str,
        path: &Path,
        base_dir: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut problems = Vec::new();
        let cfg = validate(raw, base_dir, env, &mut problems);
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    pub fn stream(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.name == name)
    }
}

/// Replace `${VAR}` references. Unset variables are reported as problems; `$${` escapes a literal `${`.
fn expand_env(
    value: &str,
    key: &str,
    env: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(body) = after.strip_prefix("${") {
            match body.find('}') {
                Some(end) => {
                    let var = &body[..end];
                    match env.get(var) {
                        Some(v) => out.push_str(v),
                        None => problems.push(format!(
                            "{key}: environment variable {var} is not set (referenced as ${{{var}}})"
                        )),
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    problems.push(format!("{key}: unterminated ${{ reference"));
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    out
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

/// Problems with an extra filter that would make Cerb silently return wrong results (CERB_API.md §4).
pub fn filter_problems(filter: &str) -> Vec<String> {
    let mut out = Vec::new();
    if filter.contains("{{") || filter.contains("{%") {
        out.push("contains `{{` or `{%`, which Cerb renders as a template".to_string());
    }
    let mut depth = 0i32;
    let mut in_quote = false;
    for c in filter.chars() {
        match c {
            '"' => in_quote = !in_quote,
            '(' if !in_quote => depth += 1,
            ')' if !in_quote => {
                depth -= 1;
                if depth < 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    if depth != 0 || in_quote {
        out.push(
            "has unbalanced parentheses or quotes (Cerb answers such a query with 0 rows)".into(),
        );
    }
    let unquoted: String = {
        let mut s = String::new();
        let mut q = false;
        for c in filter.chars() {
            if c == '"' {
                q = !q;
            } else if !q {
                s.push(c);
            }
        }
        s
    };
    for tok in unquoted.split_whitespace() {
        let lower = tok.to_ascii_lowercase();
        for pseudo in ["sort:", "limit:", "page:"] {
            if lower.trim_start_matches('(').starts_with(pseudo) {
                out.push(format!(
                    "uses `{tok}`: highwater sets sort, limit and page itself"
                ));
            }
        }
        if lower.trim_start_matches('(').starts_with("updated:") {
            out.push(format!("uses `{tok}`: the cursor owns the updated filter"));
        }
    }
    // A top-level OR (outside any parentheses) combines with the cursor wrongly.
    let mut depth = 0i32;
    let mut q = false;
    let chars: Vec<char> = filter.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        match c {
            '"' => q = !q,
            '(' if !q => depth += 1,
            ')' if !q => depth -= 1,
            'O' if !q && depth == 0 => {
                let word: String = chars[i..].iter().take(3).collect();
                let before_ok = i == 0 || chars[i - 1].is_whitespace();
                if word == "OR " && before_ok {
                    out.push(
                        "has a top-level OR: wrap the alternatives in parentheses, e.g. `(status:o OR status:w)`"
                            .into(),
                    );
                    break;
                }
            }
            _ => {}
        }
    }
    out
}

fn secs(v: f64, key: &str, problems: &mut Vec<String>) -> Duration {
    // Up to ten years: beyond, a duration means a typo, and would overflow a deadline.
    if v.is_finite() && (0.0..=315_576_000.0).contains(&v) {
        Duration::from_secs_f64(v)
    } else {
        problems.push(format!(
            "{key}: must be a number of seconds from 0 to 315576000 (ten years), got {v}"
        ));
        Duration::ZERO
    }
}

/// A secret value: must be a `${VAR}` reference to a set, non-empty variable.
fn secret_value(
    raw: &str,
    key: &str,
    env: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> Secret {
    if !raw.contains("${") && !raw.is_empty() {
        problems.push(format!(
            "{key}: write secrets as ${{VAR}} references, not literally in the file"
        ));
        return Secret::default();
    }
    let before = problems.len();
    let v = expand_env(raw, key, env, problems);
    if v.is_empty() && problems.len() == before {
        problems.push(format!("{key}: the referenced variable is empty"));
    }
    Secret::new(v)
}

/// An http(s) URL without credentials in it.
fn http_url(
    raw: &str,
    key: &str,
    env: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> String {
    let u = expand_env(raw, key, env, problems);
    match url::Url::parse(&u) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
            if !parsed.username().is_empty() || parsed.password().is_some() {
                problems.push(format!(
                    "{key}: must not contain credentials; configure them in [source]"
                ));
            }
            if key == "source.url" && parsed.path().trim_end_matches('/').ends_with("/rest") {
                problems.push(format!(
                    "{key}: {u:?} ends in /rest; give Cerb's base URL (highwater adds /rest/records/…)"
                ));
            }
            u.trim_end_matches('/').to_string()
        }
        Ok(_) => {
            problems.push(format!("{key}: {u:?} must be an http:// or https:// URL"));
            u
        }
        Err(e) => {
            problems.push(format!("{key}: {u:?} is not a URL ({e})"));
            u
        }
    }
}

fn default_source(url: String, auth: SourceAuth) -> SourceConfig {
    SourceConfig {
        url,
        auth,
        timeout: Duration::from_secs(120),
        read_timeout: Duration::from_secs(45),
        max_retries: 5,
        max_retries_per_run: 50,
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        max_retry_after: Duration::from_secs(15 * 60),
        requests_per_sec: None,
    }
}

fn validate_source(
    s: RawSource,
    base_dir: &Path,
    env: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> SourceConfig {
    let kind = s.kind.unwrap_or_else(|| "cerb".into());
    if kind != "cerb" {
        problems.push(format!(
            "source.kind: unknown source kind {kind:?}; the supported kind is \"cerb\""
        ));
    }
    let url = match &s.url {
        None => {
            problems.push(
                "source.url: missing (the Cerb base URL, e.g. https://cerb.example.com)".into(),
            );
            String::new()
        }
        Some(u) => http_url(u, "source.url", env, problems),
    };

    let schemes: Vec<&str> = [
        s.token.as_ref().map(|_| "token"),
        s.oauth2.as_ref().map(|_| "[source.oauth2]"),
        s.cerb_auth.as_ref().map(|_| "[source.cerb_auth]"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if schemes.len() > 1 {
        problems.push(format!(
            "source: set exactly one of token, [source.oauth2], [source.cerb_auth]; found {}",
            schemes.join(" and ")
        ));
    }
    let auth = if let Some(o) = s.oauth2 {
        let client_id = match o.client_id {
            Some(c) if !c.trim().is_empty() => {
                expand_env(&c, "source.oauth2.client_id", env, problems)
            }
            _ => {
                problems.push(
                    "source.oauth2.client_id: missing (the OAuth app's client id in Cerb)".into(),
                );
                String::new()
            }
        };
        let client_secret = match o.client_secret {
            Some(c) => secret_value(&c, "source.oauth2.client_secret", env, problems),
            None => {
                problems.push(
                    "source.oauth2.client_secret: missing; set it to \"${CERB_CLIENT_SECRET}\" and export it".into(),
                );
                Secret::default()
            }
        };
        let refresh_token_file = match o.refresh_token_file {
            Some(f) if !f.trim().is_empty() => {
                let f = PathBuf::from(expand_env(
                    &f,
                    "source.oauth2.refresh_token_file",
                    env,
                    problems,
                ));
                if f.is_absolute() { f } else { base_dir.join(f) }
            }
            _ => {
                problems.push(
                    "source.oauth2.refresh_token_file: missing (a file holding the refresh token; highwater rewrites it at every rotation)"
                        .into(),
                );
                PathBuf::new()
            }
        };
        let token_url = match o.token_url {
            Some(t) => http_url(&t, "source.oauth2.token_url", env, problems),
            None => format!("{url}/oauth/access_token"),
        };
        SourceAuth::OAuth2(OAuth2Config {
            client_id,
            client_secret,
            refresh_token_file,
            token_url,
        })
    } else if let Some(c) = s.cerb_auth {
        let access_key = match c.access_key {
            Some(k) if !k.trim().is_empty() => {
                expand_env(&k, "source.cerb_auth.access_key", env, problems)
            }
            _ => {
                problems.push(
                    "source.cerb_auth.access_key: missing (the Web API credentials' access key)"
                        .into(),
                );
                String::new()
            }
        };
        let secret = match c.secret {
            Some(v) => secret_value(&v, "source.cerb_auth.secret", env, problems),
            None => {
                problems.push(
                    "source.cerb_auth.secret: missing; set it to \"${CERB_API_SECRET}\" and export it".into(),
                );
                Secret::default()
            }
        };
        SourceAuth::CerbAuth(CerbAuthConfig { access_key, secret })
    } else {
        match s.token {
            Some(t) => SourceAuth::Bearer(secret_value(&t, "source.token", env, problems)),
            None => {
                problems.push(
                    "source.token: missing; set it to \"${CERB_TOKEN}\" and export the bearer token, or use [source.oauth2] or [source.cerb_auth]"
                        .into(),
                );
                SourceAuth::Bearer(Secret::default())
            }
        }
    };

    let d = default_source(String::new(), SourceAuth::Bearer(Secret::default()));
    let timeout = secs(
        s.timeout_secs.unwrap_or(d.timeout.as_secs_f64()),
        "source.timeout_secs",
        problems,
    );
    let read_timeout = secs(
        s.read_timeout_secs.unwrap_or(d.read_timeout.as_secs_f64()),
        "source.read_timeout_secs",
        problems,
    );
    if timeout.is_zero() {
        problems.push("source.timeout_secs: must be more than 0".into());
    }
    if read_timeout.is_zero() {
        problems.push("source.read_timeout_secs: must be more than 0".into());
    }
    let backoff_base = secs(
        s.backoff_base_secs.unwrap_or(d.backoff_base.as_secs_f64()),
        "source.backoff_base_secs",
        problems,
    );
    let backoff_max = secs(
        s.backoff_max_secs.unwrap_or(d.backoff_max.as_secs_f64()),
        "source.backoff_max_secs",
        problems,
    );
    if backoff_max < backoff_base {
        problems.push("source.backoff_max_secs: must be at least source.backoff_base_secs".into());
    }
    let max_retry_after = secs(
        s.max_retry_after_secs
            .unwrap_or(d.max_retry_after.as_secs_f64()),
        "source.max_retry_after_secs",
        problems,
    );
    let requests_per_sec = match s.requests_per_sec {
        None => None,
        // At least one request a day: below, the wait between requests would overflow.
        Some(r) if r.is_finite() && r >= 1.0 / 86_400.0 => Some(r),
        Some(0.0) => None,
        Some(r) => {
            problems.push(format!(
                "source.requests_per_sec: must be a positive number (or left out for no limit), got {r}"
            ));
            None
        }
    };
    SourceConfig {
        url,
        auth,
        // A read timeout longer than the whole request would never fire.
        read_timeout: read_timeout.min(timeout),
        timeout,
        max_retries: s.max_retries.unwrap_or(d.max_retries),
        max_retries_per_run: s.max_retries_per_run.unwrap_or(d.max_retries_per_run),
        backoff_base,
        backoff_max,
        max_retry_after,
        requests_per_sec,
    }
}

fn validate(
    raw: RawConfig,
    base_dir: &Path,
    env: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> Config {
    let source = match raw.source {
        None => {
            problems.push(
                "[source] is missing: it needs at least `url` and credentials (`token`, [source.oauth2] or [source.cerb_auth])"
                    .into(),
            );
            default_source(String::new(), SourceAuth::Bearer(Secret::default()))
        }
        Some(s) => validate_source(s, base_dir, env, problems),
    };

    let part_size_mib = raw.lake.part_size_mib.unwrap_or(10);
    if !(5..=5 * 1024).contains(&part_size_mib) {
        problems.push(format!(
            "lake.part_size_mib: {part_size_mib} is outside 5..=5120 (S3 needs parts of at least 5 MiB)"
        ));
    }
    let lake_url = raw.lake.url.unwrap_or_else(|| "file://./lake".into());
    let lake_url = expand_env(&lake_url, "lake.url", env, problems);
    let lake = LakeConfig {
        url: lake_url,
        options: raw
            .lake
            .options
            .into_iter()
            .map(|(k, v)| {
                let key = format!("lake.options.{k}");
                let v = expand_env(&v, &key, env, problems);
                (k, v)
            })
            .collect(),
        part_size: (part_size_mib.clamp(5, 5 * 1024) as usize) * 1024 * 1024,
    };

    let wh_path = raw
        .warehouse
        .path
        .unwrap_or_else(|| "warehouse.duckdb".into());
    let wh_path = expand_env(&wh_path, "warehouse.path", env, problems);
    let wh_path = PathBuf::from(wh_path);
    let warehouse = WarehouseConfig {
        path: if wh_path.is_absolute() {
            wh_path
        } else {
            base_dir.join(wh_path)
        },
        lock_wait: secs(
            raw.warehouse.lock_wait_secs.unwrap_or(30.0),
            "warehouse.lock_wait_secs",
            problems,
        ),
    };

    let checkpoint_rows = raw.sync.checkpoint_rows.unwrap_or(50_000);
    if checkpoint_rows == 0 {
        problems.push("sync.checkpoint_rows: must be at least 1".into());
    }
    let on_bad_record = match raw.sync.on_bad_record.as_deref() {
        None | Some("reject") => OnBadRecord::Reject,
        Some("fail") => OnBadRecord::Fail,
        Some(other) => {
            problems.push(format!(
                "sync.on_bad_record: {other:?} is not a choice; use \"reject\" (keep bad records in highwater.rejects and go on) or \"fail\""
            ));
            OnBadRecord::Reject
        }
    };
    let sync = SyncConfig {
        on_bad_record,
        checkpoint_rows: checkpoint_rows.max(1),
        checkpoint_interval: secs(
            raw.sync.checkpoint_secs.unwrap_or(60.0),
            "sync.checkpoint_secs",
            problems,
        ),
    };

    if raw.streams.is_empty() {
        problems.push(
            "no [[streams]]: add at least one, e.g. name = \"tickets\", record_type = \"ticket\""
                .into(),
        );
    }
    let mut streams = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, s) in raw.streams.into_iter().enumerate() {
        let at = format!("streams[{i}]");
        let name = s.name.unwrap_or_default();
        if name.is_empty() {
            problems.push(format!("{at}.name: missing"));
        } else if !is_identifier(&name) {
            problems.push(format!(
                "{at}.name: {name:?} must be lowercase letters, digits and _ (it names a table and a lake folder)"
            ));
        } else if name == "highwater" || name == "analytics" || name.starts_with("_hw_") {
            problems.push(format!("{at}.name: {name:?} is reserved"));
        } else if !seen.insert(name.clone()) {
            problems.push(format!("{at}.name: {name:?} is used by two streams"));
        }
        let at = if name.is_empty() {
            at
        } else {
            format!("streams.{name}")
        };
        let record_type = s.record_type.unwrap_or_default();
        if record_type.is_empty() {
            problems.push(format!("{at}.record_type: missing (e.g. \"ticket\")"));
        } else if !record_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            problems.push(format!(
                "{at}.record_type: {record_type:?} is not a Cerb record type"
            ));
        }
        let default_mode = if is_append_only(&record_type) {
            CursorMode::Id
        } else {
            CursorMode::UpdatedId
        };
        let cursor = match s.cursor.as_deref() {
            None => default_mode,
            Some("updated_id") => {
                if is_append_only(&record_type) {
                    problems.push(format!(
                        "{at}.cursor: {record_type} records have no `updated` field; use cursor = \"id\""
                    ));
                }
                CursorMode::UpdatedId
            }
            Some("id") => CursorMode::Id,
            Some(other) => {
                problems.push(format!(
                    "{at}.cursor: {other:?} is not a cursor mode; use \"updated_id\" or \"id\""
                ));
                default_mode
            }
        };
        let filter = s.filter.unwrap_or_default().trim().to_string();
        for p in filter_problems(&filter) {
            problems.push(format!("{at}.filter: {p}"));
        }
        let lag = s.lag_secs.unwrap_or(5);
        // With no lag the window would end at the current second, which can still receive
        // writes: a row written later in that second would be behind the cursor.
        if lag < 1 {
            problems.push(format!(
                "{at}.lag_secs: must be at least 1 (the current second can still receive writes)"
            ));
        }
        let page_size = s.page_size.unwrap_or(500);
        if !(1..=500).contains(&page_size) {
            problems.push(format!(
                "{at}.page_size: {page_size} is outside 1..=500 (Cerb clamps larger pages silently)"
            ));
        }
        let cursor_field = s
            .cursor_field
            .unwrap_or_else(|| default_cursor_field(&record_type).to_string());
        streams.push(StreamConfig {
            name,
            record_type,
            cursor,
            cursor_field,
            filter,
            lag: lag.max(1),
            page_size: page_size.clamp(1, 500),
        });
    }

    Config {
        base_dir: base_dir.to_path_buf(),
        source,
        lake,
        warehouse,
        sync,
        streams,
    }
}

#[cfg(test)]
mod tests;
