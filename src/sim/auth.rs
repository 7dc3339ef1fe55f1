//! Authentication as Cerb 10.4.10 does it: static bearer tokens (an admin-minted token), OAuth2
//! access/refresh tokens with rotation, and the legacy `Cerb-Auth` md5 request signature.
//!
//! Refresh rotation revokes the previous refresh token *and* the access token issued with it at once,
//! so a client that refreshes and then loses the new pair is locked out — exactly the failure the
//! client must design against (persist the new pair before use).

use std::collections::{HashMap, HashSet};

/// Cerb's 401 body for a missing `Authorization`/`Cerb-Auth` header.
pub const NO_AUTH: &str = r#"{"__status":"error","message":"Unauthorized request"}"#;
/// Cerb's 401 body for a bad, tampered, revoked or expired bearer token.
pub const DENIED: &str = r#"{"__status":"error","message":"The resource owner or authorization server denied the request."}"#;
/// The token endpoint's bare-text answer to `client_credentials`, `password` and unknown grants.
pub const UNSUPPORTED_GRANT: &str =
    "The authorization grant type is not supported by the authorization server.";
/// The token endpoint's bare-text answer to an unknown or rotated-away refresh token.
pub const BAD_REFRESH: &str = "The refresh token is invalid.";
/// The token endpoint's answer to wrong client credentials.
pub const BAD_CLIENT: &str = "Client authentication failed";

// The simulator checks signatures with the client's own functions: one implementation of
// Cerb's scheme, held against the documented test vector in both test suites.
pub use crate::source::cerb::auth::{md5_hex, signature_plain as signature, sorted_query};

/// Parses an RFC 2822 / HTTP date as sent in `Date` or `X-Date`.
pub fn parse_http_date(s: &str) -> Option<i64> {
    if let Ok(d) = chrono::DateTime::parse_from_rfc2822(s.trim()) {
        return Some(d.timestamp());
    }
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

/// The request facts signature checking needs.
pub struct SignedRequest<'a> {
    pub header: &'a str,
    pub date: Option<&'a str>,
    pub verb: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
}

/// A freshly issued OAuth pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

pub struct AuthState {
    static_tokens: HashSet<String>,
    /// access token → expiry (unix seconds).
    access: HashMap<String, i64>,
    /// refresh token → the access token issued with it.
    refresh: HashMap<String, String>,
    api_keys: HashMap<String, String>,
    client: (String, String),
    ttl: i64,
    counter: u64,
    seed: u64,
    issued: Vec<TokenPair>,
}

impl AuthState {
    pub fn new(
        tokens: &[String],
        api_keys: &[(String, String)],
        client: (String, String),
        ttl: i64,
        seed: u64,
    ) -> Self {
        AuthState {
            static_tokens: tokens.iter().cloned().collect(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            api_keys: api_keys.iter().cloned().collect(),
            client,
            ttl,
            counter: 0,
            seed,
            issued: Vec::new(),
        }
    }

    pub fn set_ttl(&mut self, ttl: i64) {
        self.ttl = ttl;
    }

    fn token(&mut self, kind: &str) -> String {
        self.counter += 1;
        let h = md5_hex(format!("{}:{}:{kind}", self.seed, self.counter).as_bytes());
        format!("{kind}.{}.{h}", self.counter)
    }

    /// Issues a new access/refresh pair (what the admin token generator does).
    pub fn mint(&mut self, now: i64) -> TokenPair {
        let access = self.token("at");
        let refresh = self.token("rt");
        self.access.insert(access.clone(), now + self.ttl);
        self.refresh.insert(refresh.clone(), access.clone());
        let pair = TokenPair {
            access_token: access,
            refresh_token: refresh,
            expires_in: self.ttl,
        };
        self.issued.push(pair.clone());
        pair
    }

    /// Every pair issued so far, oldest first.
    pub fn issued(&self) -> &[TokenPair] {
        &self.issued
    }

    /// The `refresh_token` grant: rotates the refresh token and revokes the old access token.
    pub fn refresh(
        &mut self,
        token: &str,
        client_id: Option<&str>,
        client_secret: Option<&str>,
        now: i64,
    ) -> Result<TokenPair, (u16, &'static str)> {
        if client_id.is_some_and(|c| c != self.client.0)
            || client_secret.is_some_and(|s| s != self.client.1)
        {
            return Err((401, BAD_CLIENT));
        }
        let Some(old_access) = self.refresh.remove(token) else {
            return Err((401, BAD_REFRESH));
        };
        self.access.remove(&old_access);
        Ok(self.mint(now))
    }

    /// Checks a bearer token; `Err` carries the 401 body.
    pub fn bearer(&self, token: &str, now: i64) -> Result<(), &'static str> {
        if self.static_tokens.contains(token) {
            return Ok(());
        }
        match self.access.get(token) {
            Some(exp) if now < *exp => Ok(()),
            _ => Err(DENIED),
        }
    }

    /// Checks a `Cerb-Auth` signed request; `Err` carries the 401 reason.
    pub fn signed(&self, r: &SignedRequest<'_>, now: i64) -> Result<(), String> {
        let deny = |why: &str| {
            Err(format!(
                r#"{{"__status":"error","message":"Access denied! ({why})"}}"#
            ))
        };
        let Some(date) = r.date else {
            return deny("Invalid timestamp");
        };
        match parse_http_date(date) {
            Some(t) if (now - t).abs() <= 600 => {}
            _ => return deny("Invalid timestamp"),
        }
        let Some((key, sig)) = r.header.trim().split_once(':') else {
            return deny("Invalid credentials: access key");
        };
        let Some(secret) = self.api_keys.get(key) else {
            return deny("Invalid credentials: access key");
        };
        if signature(r.verb, date, r.path, r.query, r.body, secret)
            != sig.trim().to_ascii_lowercase()
        {
            return deny("Invalid credentials: checksum");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_signature_vector() {
        let sig = signature(
            "POST",
            "Wed, 08 Feb 2017 19:53:35 GMT",
            "/rest/tickets/search.json",
            "show_meta=0",
            b"expand=custom_&q=status%3Ao",
            "fw4y9fjjd5tqjlsk3u9zkjjr154xbftc",
        );
        assert_eq!(sig, "0cfe2f3b06552c060c8e77f7a0c875ee");
    }

    #[test]
    fn query_sorted_by_name_keeping_encoding_and_repeat_order() {
        assert_eq!(
            sorted_query("q=a%20b&limit=5&expand=x&expand=a"),
            "expand=x&expand=a&limit=5&q=a%20b"
        );
    }
}
