//! Credentials on Cerb requests: a static bearer token, OAuth2 with a rotating refresh token, or
//! the legacy `Cerb-Auth` md5 signature (CERB_API.md §2).
//!
//! OAuth2 is the delicate one. Cerb rotates the refresh token at every refresh and revokes the old
//! one (and the access token issued with it) at once, so a client that refreshes and then loses the
//! new refresh token is locked out until an admin mints a new one. Hence, at every refresh:
//! 1. an exclusive OS lock on `<refresh_token_file>.lock` is taken (two processes never refresh at
//!    once — a `highwater check` beside a sync, or two warehouses sharing one token; syncs and
//!    reconciles of one warehouse are kept apart by the run lock as well);
//! 2. the refresh token is read from the file under that lock (a token another process rotated is
//!    picked up);
//! 3. the token endpoint is asked for a new pair;
//! 4. the new refresh token is written atomically — temp file in the same folder (mode 0600),
//!    fsync, rename over the old file, fsync the folder — and only then
//! 5. the new access token is used.
//!
//! Access tokens are kept in memory only and refreshed shortly before they expire (`expires_in`
//! minus a margin, on this machine's monotonic clock) and once when a request answers 401. A run
//! therefore starts with one refresh; the file holds nothing but the refresh token.
//!
//! Signed requests sign with the server's clock: Cerb accepts ±600 s of skew, and a 401 "Invalid
//! timestamp" is retried once with the offset learned from the server's `Date` header (as cloud SDKs
//! correct clock skew).
//!
//! No secret is ever formatted into an error or a log line; header values are marked sensitive.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use md5::{Digest, Md5};
use reqwest::header::{AUTHORIZATION, DATE, HeaderName, HeaderValue};
use serde::Deserialize;

use crate::config::{CerbAuthConfig, OAuth2Config, Secret, SourceAuth};
use crate::source::SourceError;

/// How long a refresh waits for another process's refresh to finish.
const TOKEN_LOCK_WAIT: Duration = Duration::from_secs(120);
/// Access tokens are refreshed this long before they expire (at most half their lifetime).
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// Cerb's access-token lifetime, assumed when the token endpoint does not say.
const DEFAULT_EXPIRES_IN: u64 = 3600;

pub(crate) enum Auth {
    Bearer(Secret),
    OAuth2(OAuth2),
    Signed(Signed),
}

/// What a request was authorized with, so a 401 can tell a stale token from a fresh one.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Used {
    pub(crate) generation: u64,
}

impl Auth {
    pub(crate) fn new(cfg: &SourceAuth) -> Auth {
        match cfg {
            SourceAuth::Bearer(t) => Auth::Bearer(t.clone()),
            SourceAuth::OAuth2(o) => Auth::OAuth2(OAuth2::new(o.clone())),
            SourceAuth::CerbAuth(c) => Auth::Signed(Signed::new(c)),
        }
    }

    /// What to tell the operator when the server refuses the credentials.
    pub(crate) fn hint(&self) -> String {
        match self {
            Auth::Bearer(_) => {
                "check source.token: a Cerb OAuth2 bearer token with scope api:read-only \
                 (Setup » Developers » OAuth2 Token Generator)"
                    .into()
            }
            Auth::OAuth2(o) => format!(
                "the access token was refused right after a refresh: check the OAuth app's scopes \
                 (api:read-only) and that its worker is active; the refresh token stays in {}",
                o.cfg.refresh_token_file.display()
            ),
            Auth::Signed(_) => {
                "check [source.cerb_auth] access_key and secret, the Web API credentials' \
                 allowed paths (rest/records/*), and this machine's clock"
                    .into()
            }
        }
    }

    /// Note the server's clock from a response's `Date` header (signed requests sign with it).
    pub(crate) fn observe_server_time(&self, server_now: i64) {
        if let Auth::Signed(s) = self {
            let offset = server_now - crate::util::unix_now();
            // Only offsets that matter: a second of drift is noise.
            let offset = if offset.abs() <= 2 { 0 } else { offset };
            let old = s.offset.swap(offset, Ordering::Relaxed);
            if old != offset && offset.abs() > 60 && !s.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    offset_secs = offset,
                    "the server's clock differs from this machine's; signing requests with the server's time"
                );
            }
        }
    }

    /// Handle a 401 once: refresh an OAuth2 access token (unless a newer one exists already) or
    /// adopt the server's clock for a signature. `true` means "send the request again".
    pub(crate) async fn recover(&self, used: Used, err: &SourceError) -> bool {
        match self {
            Auth::Bearer(_) => false,
            Auth::OAuth2(o) => {
                tracing::info!("the access token was refused; refreshing it once");
                o.invalidate(used.generation).await;
                true
            }
            Auth::Signed(_) => matches!(err,
                SourceError::Unauthorized { message, .. } if message.contains("Invalid timestamp")),
        }
    }

    /// Add credentials to a request that is ready to send (URL, query and body final).
    pub(crate) async fn authorize(
        &self,
        src: &super::CerbSource,
        req: &mut reqwest::Request,
    ) -> Result<Used, SourceError> {
        match self {
            Auth::Bearer(t) => {
                req.headers_mut().insert(AUTHORIZATION, bearer(t)?);
                Ok(Used::default())
            }
            Auth::OAuth2(o) => {
                let (token, generation) = o.access_token(src).await?;
                req.headers_mut().insert(AUTHORIZATION, bearer(&token)?);
                Ok(Used { generation })
            }
            Auth::Signed(s) => {
                s.sign(req)?;
                Ok(Used::default())
            }
        }
    }
}

fn bearer(token: &Secret) -> Result<HeaderValue, SourceError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
        SourceError::Credentials {
            message: "the bearer token contains characters that cannot go into an HTTP header"
                .into(),
        }
    })?;
    v.set_sensitive(true);
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// OAuth2

pub(crate) struct OAuth2 {
    cfg: OAuth2Config,
    current: tokio::sync::Mutex<Option<Access>>,
    generation: AtomicU64,
}

struct Access {
    token: Secret,
    refresh_at: Instant,
    generation: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
}

impl OAuth2 {
    fn new(cfg: OAuth2Config) -> OAuth2 {
        OAuth2 {
            cfg,
            current: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    async fn invalidate(&self, generation: u64) {
        let mut cur = self.current.lock().await;
        if cur.as_ref().is_some_and(|a| a.generation == generation) {
            *cur = None;
        }
    }

    /// A valid access token, refreshed first when it is missing or about to expire.
    async fn access_token(&self, src: &super::CerbSource) -> Result<(Secret, u64), SourceError> {
        let mut cur = self.current.lock().await;
        if let Some(a) = cur.as_ref()
            && Instant::now() < a.refresh_at
        {
            return Ok((a.token.clone(), a.generation));
        }
        let fresh = self.refresh(src).await?;
        let out = (fresh.token.clone(), fresh.generation);
        *cur = Some(fresh);
        Ok(out)
    }

    async fn refresh(&self, src: &super::CerbSource) -> Result<Access, SourceError> {
        let file = self.cfg.refresh_token_file.clone();
        let lock = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || TokenFileLock::acquire(&file, TOKEN_LOCK_WAIT))
                .await
                .map_err(|e| SourceError::Credentials {
                    message: format!("internal task failed: {e}"),
                })??
        };
        let refresh_token = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || read_refresh_token(&file))
                .await
                .map_err(|e| SourceError::Credentials {
                    message: format!("internal task failed: {e}"),
                })??
        };
        let started = Instant::now();
        let resp = src.token_request(&self.cfg, &refresh_token).await?;
        let access = match resp.access_token {
            Some(a) if !a.is_empty() => Secret::new(a),
            _ => {
                return Err(SourceError::Credentials {
                    message: format!(
                        "the token endpoint {} answered without an access_token",
                        self.cfg.token_url
                    ),
                });
            }
        };
        // Persist the rotated refresh token before the new access token is used: once Cerb has
        // rotated, the old refresh token is dead.
        if let Some(new_rt) = resp.refresh_token.filter(|r| !r.is_empty())
            && new_rt != refresh_token.expose()
        {
            let new_rt = Secret::new(new_rt);
            let f = file.clone();
            tokio::task::spawn_blocking(move || write_atomically(&f, format!("{}\n", new_rt.expose()).as_bytes()))
                .await
                .map_err(|e| SourceError::Credentials {
                    message: format!("internal task failed: {e}"),
                })?
                .map_err(|e| SourceError::Credentials {
                    message: format!(
                        "Cerb rotated the refresh token but the new one could not be saved to {}: {e}; \
                         the old one is revoked now, so mint a new token in Cerb (Setup » Developers » \
                         OAuth2 Token Generator), write its refresh token to that file and fix the folder's \
                         permissions or free space",
                        file.display()
                    ),
                })?;
        }
        drop(lock);
        let expires_in = Duration::from_secs(resp.expires_in.unwrap_or(DEFAULT_EXPIRES_IN));
        let margin = EXPIRY_MARGIN.min(expires_in / 2);
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::info!(
            expires_in_secs = expires_in.as_secs(),
            token_file = %file.display(),
            "OAuth2 access token refreshed; the rotated refresh token is saved"
        );
        Ok(Access {
            token: access,
            refresh_at: started + expires_in - margin,
            generation,
        })
    }
}

/// An exclusive OS lock on `<file>.lock`, released on drop (and by the kernel if the process dies).
struct TokenFileLock {
    file: File,
}

impl TokenFileLock {
    fn acquire(token_file: &Path, wait: Duration) -> Result<TokenFileLock, SourceError> {
        let mut p = token_file.as_os_str().to_owned();
        p.push(".lock");
        let path = PathBuf::from(p);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| SourceError::Credentials {
                message: format!("cannot open the refresh-token lock {}: {e}", path.display()),
            })?;
        let started = Instant::now();
        let mut delay = Duration::from_millis(20);
        loop {
            // SAFETY: flock on a descriptor owned by `file`; no memory is shared.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(TokenFileLock { file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(SourceError::Credentials {
                    message: format!("cannot lock {}: {err}", path.display()),
                });
            }
            if started.elapsed() >= wait {
                return Err(SourceError::Credentials {
                    message: format!(
                        "another process has held {} for {:.0} s while refreshing the OAuth2 token; \
                         try again when it is done",
                        path.display(),
                        started.elapsed().as_secs_f64()
                    ),
                });
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }
}

impl Drop for TokenFileLock {
    fn drop(&mut self) {
        // SAFETY: the descriptor is owned by `self.file` and open.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

fn read_refresh_token(path: &Path) -> Result<Secret, SourceError> {
    let mut f = File::open(path).map_err(|e| SourceError::Credentials {
        message: format!(
            "cannot read the refresh token file {}: {e}; write the refresh token from Cerb's \
             OAuth2 Token Generator there (chmod 600)",
            path.display()
        ),
    })?;
    if let Ok(meta) = f.metadata()
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the refresh token file is readable by others; it is rewritten with mode 600 at the next rotation"
        );
    }
    let mut text = String::new();
    f.read_to_string(&mut text)
        .map_err(|e| SourceError::Credentials {
            message: format!("cannot read the refresh token file {}: {e}", path.display()),
        })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(SourceError::Credentials {
            message: format!(
                "the refresh token file {} is empty; write the refresh token from Cerb's OAuth2 Token \
                 Generator there",
                path.display()
            ),
        });
    }
    Ok(Secret::new(token))
}

/// Replace `path` with `contents` so that a crash leaves either the old or the new file, never a
/// torn one: temp file in the same folder (mode 0600), fsync, rename, fsync the folder.
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "token".into());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The umask can only remove bits; set them exactly anyway.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl super::CerbSource {
    /// The `refresh_token` grant, with the source's retries for transient failures. A refusal
    /// (400/401) fails at once with the server's text.
    async fn token_request(
        &self,
        cfg: &OAuth2Config,
        refresh_token: &Secret,
    ) -> Result<TokenResponse, SourceError> {
        let url = cfg.token_url.as_str();
        let resp = self
            .with_retries(url, move || async move {
                let form = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.expose()),
                    ("client_id", cfg.client_id.as_str()),
                    ("client_secret", cfg.client_secret.expose()),
                ];
                let resp = self
                    .inner
                    .http
                    .post(url)
                    .form(&form)
                    .send()
                    .await
                    .map_err(|e| super::transport(url, e))?;
                let status = resp.status().as_u16();
                let retry_after = super::retry_after_of(resp.headers());
                let body = resp.bytes().await.map_err(|e| super::transport(url, e))?;
                let text = crate::util::snippet(&String::from_utf8_lossy(&body), 200);
                match status {
                    200 => serde_json::from_slice::<TokenResponse>(&body).map_err(|e| SourceError::BadBody {
                        url: url.to_string(),
                        message: format!("the token endpoint's answer is not a token response: {e}"),
                    }),
                    400 | 401 | 403 => Err(SourceError::Credentials {
                        message: format!(
                            "the token endpoint {url} refused the refresh (HTTP {status}: {text}); if the \
                             refresh token in {} was rotated away or expired, mint a new token in Cerb \
                             (Setup » Developers » OAuth2 Token Generator) and write its refresh token \
                             there; otherwise check source.oauth2.client_id and client_secret",
                            cfg.refresh_token_file.display()
                        ),
                    }),
                    _ => Err(SourceError::Http {
                        url: url.to_string(),
                        status,
                        body: text,
                        retry_after,
                    }),
                }
            })
            .await?;
        Ok(resp)
    }
}

// ---------------------------------------------------------------------------------------------
// Cerb-Auth signatures

pub(crate) struct Signed {
    access_key: String,
    secret: Secret,
    /// Server clock minus local clock, seconds.
    offset: AtomicI64,
    warned: AtomicBool,
}

impl Signed {
    fn new(cfg: &CerbAuthConfig) -> Signed {
        Signed {
            access_key: cfg.access_key.clone(),
            secret: cfg.secret.clone(),
            offset: AtomicI64::new(0),
            warned: AtomicBool::new(false),
        }
    }

    fn sign(&self, req: &mut reqwest::Request) -> Result<(), SourceError> {
        let now = crate::util::unix_now() + self.offset.load(Ordering::Relaxed);
        let date = httpdate::fmt_http_date(
            SystemTime::UNIX_EPOCH + Duration::from_secs(now.max(0) as u64),
        );
        let body: &[u8] = req.body().and_then(|b| b.as_bytes()).unwrap_or(&[]);
        let sig = signature(
            req.method().as_str(),
            &date,
            req.url().path(),
            req.url().query().unwrap_or(""),
            body,
            &self.secret,
        );
        let bad = |_| SourceError::Credentials {
            message:
                "source.cerb_auth.access_key contains characters that cannot go into an HTTP header"
                    .into(),
        };
        let mut v = HeaderValue::from_str(&format!("{}:{sig}", self.access_key)).map_err(bad)?;
        v.set_sensitive(true);
        let h = req.headers_mut();
        h.insert(HeaderName::from_static("cerb-auth"), v);
        h.insert(DATE, HeaderValue::from_str(&date).map_err(bad)?);
        Ok(())
    }
}

/// Lowercase hex md5.
pub fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A raw query string sorted by parameter name, each pair's encoding kept, repeated names in their
/// original order (Cerb's `_sortQueryString`).
pub fn sorted_query(q: &str) -> String {
    let mut parts: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
    parts.sort_by_key(|p| p.split('=').next().unwrap_or(""));
    parts.join("&")
}

/// The `Cerb-Auth` signature (CERB_API.md §2.2): lowercase hex md5 of verb, date, path, sorted
/// query, body and md5(secret), each followed by a newline.
pub fn signature(
    verb: &str,
    date: &str,
    path: &str,
    query: &str,
    body: &[u8],
    secret: &Secret,
) -> String {
    signature_plain(verb, date, path, query, body, secret.expose())
}

/// [`signature`] over a plain secret: the simulator verifies requests with the same function.
pub fn signature_plain(
    verb: &str,
    date: &str,
    path: &str,
    query: &str,
    body: &[u8],
    secret: &str,
) -> String {
    let mut s = Vec::with_capacity(256 + body.len());
    for part in [
        verb.as_bytes(),
        date.as_bytes(),
        path.as_bytes(),
        sorted_query(query).as_bytes(),
        body,
    ] {
        s.extend_from_slice(part);
        s.push(b'\n');
    }
    s.extend_from_slice(md5_hex(secret.as_bytes()).as_bytes());
    s.push(b'\n');
    md5_hex(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Cerb's documentation (CERB_API.md §2.2).
    #[test]
    fn documented_signature_vector() {
        let sig = signature(
            "POST",
            "Wed, 08 Feb 2017 19:53:35 GMT",
            "/rest/tickets/search.json",
            "show_meta=0",
            b"expand=custom_&q=status%3Ao",
            &Secret::new("fw4y9fjjd5tqjlsk3u9zkjjr154xbftc"),
        );
        assert_eq!(sig, "0cfe2f3b06552c060c8e77f7a0c875ee");
    }

    #[test]
    fn query_is_sorted_by_name_keeping_encoding() {
        assert_eq!(
            sorted_query("q=a+b%3A&limit=5&page=1"),
            "limit=5&page=1&q=a+b%3A"
        );
        assert_eq!(sorted_query("b=2&a=1&b=1"), "a=1&b=2&b=1");
        assert_eq!(sorted_query(""), "");
    }

    #[test]
    fn signed_request_carries_date_and_header_but_no_secret() {
        let s = Signed::new(&CerbAuthConfig {
            access_key: "key1".into(),
            secret: Secret::new("very-secret"),
        });
        let mut req = reqwest::Client::new()
            .get("http://127.0.0.1:1/rest/records/ticket/search.json")
            .query(&[("q", "sort:updated,id"), ("limit", "5")])
            .build()
            .unwrap();
        s.sign(&mut req).unwrap();
        let h = req.headers()["cerb-auth"].to_str().unwrap().to_string();
        let date = req.headers()["date"].to_str().unwrap().to_string();
        let want = signature(
            "GET",
            &date,
            "/rest/records/ticket/search.json",
            "q=sort%3Aupdated%2Cid&limit=5",
            b"",
            &Secret::new("very-secret"),
        );
        assert_eq!(h, format!("key1:{want}"));
        assert!(req.headers()["cerb-auth"].is_sensitive());
        assert!(!format!("{:?}", req.headers()).contains("very-secret"));
    }

    #[test]
    fn atomic_write_replaces_with_mode_600_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rt");
        std::fs::write(&p, "old\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&p, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["rt".to_string()]);
    }

    #[test]
    fn token_file_lock_excludes_a_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rt");
        let held = TokenFileLock::acquire(&p, Duration::from_millis(10)).unwrap();
        let e = TokenFileLock::acquire(&p, Duration::from_millis(50))
            .err()
            .unwrap();
        assert!(e.to_string().contains("another process"), "{e}");
        drop(held);
        TokenFileLock::acquire(&p, Duration::from_millis(10)).unwrap();
    }
}
