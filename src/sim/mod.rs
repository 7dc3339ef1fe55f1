//! A Cerb 10.4-compatible REST server for tests, the zero-config demo and benchmarks.
//!
//! It reproduces what DESIGN.md §3 lists, traps included, so the client is tested against the real
//! server's behaviour rather than an idealised one:
//! - `GET /rest/records/{type}/search.json` with `q`, `limit`, `page`, `show_results`, `expand`, and
//!   Cerb's envelope (top-level keys sorted; `limit`/`page` echo the URL parameters: `limit` clamped
//!   1..500, default 10, `page` as given); record types ticket, message, comment, contact, org, worker,
//!   task; `GET`/`PUT`/`DELETE /rest/records/{type}/{id}.json`;
//! - Cerb's query language with its silently wrong forms ([`query`]); the page-beyond-end quirk;
//!   unknown filters and syntax errors answering success with `total: 0`; HTTP 200 with
//!   `__status:"error"` for unknown record types and endpoints;
//! - auth ([`auth`]): static bearer tokens, OAuth refresh rotation, access-token expiry, 400 plain text
//!   for unsupported grants, `Cerb-Auth` md5 signatures with a ±600 s window;
//! - deterministic data from a seed ([`data`]), whole-second timestamps in the past of the clock, many
//!   rows sharing some seconds; a controllable clock and a `Date` header on every response;
//! - mutations that do or do not bump `updated`, late writes, merges, purges, and fault injection.
//!
//! Behaviours chosen where Cerb's is unknown (each the harder one for a careful client):
//! - a top-level `OR` matches nothing even without `sort:`/`limit:` (Cerb is only verified with them);
//! - any Twig markup in `q` (`{{`, `{%`) makes the query match nothing (templates are not rendered);
//! - without `sort:` rows come in primary-key order, as MySQL usually returns them; a client must still
//!   not rely on it ([`Sim::set_ignore_sort`] scrambles pages to prove it does not);
//! - injected maintenance answers `302` to `/update/locked`, which answers `503` HTML with no
//!   `Retry-After` — a client that does not follow redirects sees the 302;
//! - the `Date` header and every `now` bound follow the simulator clock, so a client deriving its
//!   window end from `Date` sees a skewed clock when one is configured;
//! - a stall holds the connection open and silent until the client gives up (or `stall` elapses);
//! - a truncated body sends the real response's head (full `Content-Length`) and half the body;
//! - the authorization-code grant is not simulated (400 plain text), refresh and minted tokens are;
//! - bodies of messages/comments/other types follow Cerb's dictionaries where CERB_API.md documents
//!   them; undocumented booleans (`is_outgoing`, `is_disabled`, …) are sent as 0/1 ints, while task
//!   `is_completed` is a JSON bool as documented.
//!
//! The hardest one for a careful client is the *late write*: a row appears in a second the cursor has
//! already passed, with an id below the last one read. No page query can ever return it; only
//! reconciliation by id finds it.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod data;
pub mod faults;
pub mod query;
pub mod server;
pub mod store;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use data::RType;
use store::{Table, json_int};

pub use auth::TokenPair;

/// Cerb's `__version` and `__build` as recorded in the fixtures.
pub const CERB_VERSION: &str = "10.4.10";
pub const CERB_BUILD: i64 = 2024030901;

/// The simulator's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// The machine clock.
    Real,
    /// The machine clock plus this many seconds (negative: behind).
    Offset(i64),
    /// Frozen at this unix second.
    Fixed(i64),
}

impl Clock {
    pub fn now(self) -> i64 {
        let real = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        };
        match self {
            Clock::Real => real(),
            Clock::Offset(s) => real() + s,
            Clock::Fixed(t) => t,
        }
    }
}

/// How a 429 states its `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: N` (use a huge N for the "huge" case).
    Seconds(u64),
    /// `Retry-After: <HTTP date>` of this unix second.
    HttpDate(i64),
    /// `Retry-After: 0`.
    Zero,
    /// No header.
    None,
}

/// A fault answered to one search request instead of (or instead of finishing) the real answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 with the given `Retry-After`.
    RateLimit(RetryAfter),
    /// 500/502/503 (any status) with an HTML body.
    ServerError(u16),
    /// Cerb's upgrade lock: 302 to `/update/locked`, which answers 503 HTML.
    Maintenance,
    /// Accept and read the request, then send nothing.
    Stall,
    /// Send the head (full `Content-Length`) and half the body, then go silent, connection open.
    StallBody,
    /// Full `Content-Length`, half the body, then close.
    Truncated,
    /// Close with a TCP reset.
    Reset,
    /// HTTP 200 whose body is not Cerb JSON (an HTML page, as a captive proxy answers).
    BadBody,
    /// HTTP 200 with `__status:"error"`.
    StatusError,
    /// 401 as after access-token expiry.
    Unauthorized,
    /// `total: -1` with empty results (Cerb's query timeout).
    QueryTimeout,
    /// The normal answer, sent after this delay (a slow source).
    Delay(Duration),
}

/// Configuration of a simulator.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Generated rows per record type (see `type_records` for per-type overrides).
    pub records: usize,
    pub seed: u64,
    /// Static bearer tokens accepted forever.
    pub tokens: Vec<String>,
    /// Share of search requests answered with a random transient fault.
    pub fault_rate: f64,
    pub clock: Clock,
    /// Lifetime of OAuth access tokens, seconds.
    pub access_token_ttl: i64,
    /// Per-type row counts overriding `records`, e.g. `("ticket", 1_000_000)`.
    pub type_records: Vec<(String, usize)>,
    /// Generated timestamps lie in the 30 days before this second (default: the clock at start).
    pub anchor: Option<i64>,
    /// `Cerb-Auth` credentials: (access key, secret key).
    pub api_keys: Vec<(String, String)>,
    /// OAuth client (id, secret) accepted by the token endpoint.
    pub oauth_client: (String, String),
    /// How long a stall holds a silent connection at most.
    pub stall: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            records: 1000,
            seed: 1,
            tokens: vec!["test-token".to_string()],
            fault_rate: 0.0,
            clock: Clock::Real,
            access_token_ttl: 3600,
            type_records: Vec::new(),
            anchor: None,
            api_keys: vec![("sim-key".to_string(), "sim-secret".to_string())],
            oauth_client: ("highwater".to_string(), "sim-client-secret".to_string()),
            stall: Duration::from_secs(300),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) seed: u64,
    pub(crate) tables: Vec<Mutex<Table>>,
    pub(crate) clock: Mutex<Clock>,
    pub(crate) faults: Mutex<VecDeque<Fault>>,
    pub(crate) fault_rate: Mutex<f64>,
    pub(crate) fault_rng: Mutex<ChaCha8Rng>,
    pub(crate) ignore_keyset: AtomicBool,
    pub(crate) ignore_sort: AtomicBool,
    pub(crate) requests: AtomicU64,
    /// Actions run just before the search request with the given number (1-based) is answered.
    pub(crate) hooks: Mutex<Vec<(u64, SearchHook)>>,
    pub(crate) auth: Mutex<auth::AuthState>,
    /// Requests to the OAuth token endpoint (any outcome).
    pub(crate) token_requests: AtomicU64,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) stall: Duration,
    addr: SocketAddr,
}

/// A running simulator; cheap to clone. Dropping the handles does not stop it: call [`Sim::shutdown`].
#[derive(Clone)]
pub struct Sim {
    pub(crate) inner: Arc<Inner>,
}

/// A test hook run before one search request is answered.
pub(crate) type SearchHook = Box<dyn FnOnce() + Send>;

/// Locks a mutex, recovering the data if a holder panicked (the simulator's state stays usable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps ticket `status` and `status_id` consistent when only one of them is given.
fn sync_ticket_status(t: RType, obj: &mut Map<String, Value>, fields: &Map<String, Value>) {
    if t != RType::Ticket {
        return;
    }
    const NAMES: [&str; 4] = ["open", "waiting", "closed", "deleted"];
    if let Some(Value::String(s)) = fields.get("status")
        && !fields.contains_key("status_id")
        && let Some(i) = NAMES.iter().position(|n| n == s)
    {
        obj.insert("status_id".into(), Value::from(i as i64));
    }
    if let Some(i) = json_int(fields.get("status_id"))
        && !fields.contains_key("status")
        && let Some(n) = NAMES.get(i as usize)
    {
        obj.insert("status".into(), Value::from(*n));
    }
}

impl Sim {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(cfg: SimConfig) -> std::io::Result<Sim> {
        Sim::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await
    }

    pub async fn start_on(addr: SocketAddr, cfg: SimConfig) -> std::io::Result<Sim> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let anchor = cfg.anchor.unwrap_or_else(|| cfg.clock.now());
        let tables = RType::ALL
            .iter()
            .map(|t| {
                let n = cfg
                    .type_records
                    .iter()
                    .find(|(name, _)| RType::from_name(name) == Some(*t))
                    .map(|(_, n)| *n)
                    .unwrap_or(cfg.records);
                Mutex::new(Table::new(*t, cfg.seed, n, anchor))
            })
            .collect();
        let (tx, rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            seed: cfg.seed,
            tables,
            clock: Mutex::new(cfg.clock),
            faults: Mutex::new(VecDeque::new()),
            fault_rate: Mutex::new(cfg.fault_rate),
            fault_rng: Mutex::new(ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xFA17)),
            ignore_keyset: AtomicBool::new(false),
            ignore_sort: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            hooks: Mutex::new(Vec::new()),
            auth: Mutex::new(auth::AuthState::new(
                &cfg.tokens,
                &cfg.api_keys,
                cfg.oauth_client.clone(),
                cfg.access_token_ttl,
                cfg.seed,
            )),
            token_requests: AtomicU64::new(0),
            shutdown: tx,
            stall: cfg.stall,
            addr,
        });
        let sim = Sim { inner };
        tokio::spawn(server::serve(listener, sim.clone(), rx));
        Ok(sim)
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Stops accepting and closes connections at their next request.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
    }

    pub fn now(&self) -> i64 {
        lock(&self.inner.clock).now()
    }

    pub fn set_clock(&self, c: Clock) {
        *lock(&self.inner.clock) = c;
    }

    pub(crate) fn table(&self, rtype: &str) -> Option<MutexGuard<'_, Table>> {
        RType::from_name(rtype).map(|t| lock(&self.inner.tables[t.index()]))
    }

    /// Live rows as served, ordered by id.
    pub fn records(&self, rtype: &str) -> Vec<Value> {
        let Some(t) = self.table(rtype) else {
            return Vec::new();
        };
        t.all_ids()
            .into_iter()
            .filter_map(|id| t.value(id))
            .collect()
    }

    pub fn get(&self, rtype: &str, id: i64) -> Option<Value> {
        self.table(rtype)?.value(id)
    }

    /// Number of live rows of a type.
    pub fn count(&self, rtype: &str) -> usize {
        self.table(rtype).map(|t| t.len()).unwrap_or(0)
    }

    fn id_value(t: RType, id: i64) -> Value {
        if t.id_is_string() {
            Value::from(id.to_string())
        } else {
            Value::from(id)
        }
    }

    fn write_new(
        &self,
        rtype: &str,
        id_of: impl FnOnce(&Table) -> Option<i64>,
        ts: i64,
        fields: Map<String, Value>,
    ) -> i64 {
        let Some(mut t) = self.table(rtype) else {
            return 0;
        };
        let Some(id) = id_of(&t) else { return 0 };
        let rt = t.rtype;
        let mut obj = t.template(id, ts);
        obj.insert("id".into(), Sim::id_value(rt, id));
        obj.insert(rt.ts_key().into(), Value::from(ts));
        sync_ticket_status(rt, &mut obj, &fields);
        obj.extend(fields);
        t.put(id, &Value::Object(obj));
        id
    }

    /// Creates a row with the next id and `updated = now`; returns its id (0 for an unknown type).
    pub fn create(&self, rtype: &str, fields: Map<String, Value>) -> i64 {
        let now = self.now();
        self.write_new(rtype, |t| Some(t.max_id() + 1), now, fields)
    }

    /// Stores this exact object (its `id` and timestamp key decide where it sorts).
    pub fn insert_raw(&self, rtype: &str, record: Value) {
        let Some(mut t) = self.table(rtype) else {
            return;
        };
        if let Some(id) = json_int(record.get("id")) {
            t.put(id, &record);
        }
    }

    /// Stores `body` byte for byte as the row keyed `(ts, id)`: searches sort and filter it by that
    /// key and serve `body` unchanged inside `results`, whatever it holds — a record without `id`
    /// or with a different one, a lone surrogate escape, raw control bytes, something that is not
    /// an object. For the bad-input tests: a proxy or plugin between Cerb and the client.
    pub fn insert_raw_body(
        &self,
        rtype: &str,
        id: i64,
        ts: Option<i64>,
        body: impl Into<bytes::Bytes>,
    ) {
        if let Some(mut t) = self.table(rtype) {
            t.put_bytes(id, ts, body.into());
        }
    }

    /// Changes fields; `bump_updated` sets the timestamp key to now (Cerb's API PUT on tickets does not).
    pub fn update(
        &self,
        rtype: &str,
        id: i64,
        fields: Map<String, Value>,
        bump_updated: bool,
    ) -> bool {
        let now = self.now();
        let Some(mut t) = self.table(rtype) else {
            return false;
        };
        update_in(&mut t, id, fields, bump_updated.then_some(now))
    }

    /// Updates every id, all stamped with the same second (now); returns that second.
    pub fn bulk_update(&self, rtype: &str, ids: &[i64], fields: Map<String, Value>) -> i64 {
        let now = self.now();
        if let Some(mut t) = self.table(rtype) {
            for id in ids {
                update_in(&mut t, *id, fields.clone(), Some(now));
            }
        }
        now
    }

    /// Tickets: status deleted / `status_id` 3, `updated` unchanged. Other types: purged.
    pub fn soft_delete(&self, rtype: &str, id: i64) -> bool {
        if RType::from_name(rtype) != Some(RType::Ticket) {
            return self.purge(rtype, id);
        }
        let mut f = Map::new();
        f.insert("status".into(), Value::from("deleted"));
        f.insert("status_id".into(), Value::from(3));
        self.update(rtype, id, f, false)
    }

    pub fn purge(&self, rtype: &str, id: i64) -> bool {
        self.table(rtype).is_some_and(|mut t| t.remove(id))
    }

    /// Cerb's ticket merge: `from` vanishes, `into` absorbs its message counts, `updated` not bumped.
    pub fn merge(&self, rtype: &str, from: i64, into: i64) -> bool {
        let Some(mut t) = self.table(rtype) else {
            return false;
        };
        if from == into {
            return false;
        }
        let (Some(a), Some(mut b)) = (t.value(from), t.value(into)) else {
            return false;
        };
        if t.rtype == RType::Ticket {
            for k in ["num_messages", "num_messages_in", "num_messages_out"] {
                let sum = json_int(a.get(k)).unwrap_or(0) + json_int(b.get(k)).unwrap_or(0);
                b[k] = Value::from(sum);
            }
        }
        t.remove(from);
        t.put(into, &b);
        true
    }

    /// A row written late: timestamp `updated` (already read past) and the highest unused id below
    /// the current maximum. Returns the id, or 0 when no such id exists.
    pub fn late_write(&self, rtype: &str, updated: i64, fields: Map<String, Value>) -> i64 {
        self.write_new(rtype, |t| t.free_id_below_max(), updated, fields)
    }

    /// Scripted faults for the next search requests, first in first out.
    pub fn push_fault(&self, f: Fault) {
        lock(&self.inner.faults).push_back(f);
    }

    pub fn set_fault_rate(&self, r: f64) {
        *lock(&self.inner.fault_rate) = r.clamp(0.0, 1.0);
    }

    /// Searches ignore the filters of `q` (sort, limit and page still apply).
    pub fn set_ignore_keyset(&self, on: bool) {
        self.inner.ignore_keyset.store(on, Ordering::SeqCst);
    }

    /// Searches return each page's rows in a scrambled order.
    pub fn set_ignore_sort(&self, on: bool) {
        self.inner.ignore_sort.store(on, Ordering::SeqCst);
    }

    /// Run `f` just before search request number `n` (1-based, counting every search this
    /// simulator received) is answered: lets a test change the source in the middle of a walk.
    pub fn on_search(&self, n: u64, f: impl FnOnce() + Send + 'static) {
        lock(&self.inner.hooks).push((n, Box::new(f)));
    }

    /// Search requests received (faulted ones included).
    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Issues an OAuth access/refresh pair, as Cerb's admin token generator does.
    pub fn mint_oauth_tokens(&self) -> TokenPair {
        let now = self.now();
        lock(&self.inner.auth).mint(now)
    }

    /// Requests the OAuth token endpoint received (refresh grants and refusals alike).
    pub fn token_requests(&self) -> u64 {
        self.inner.token_requests.load(Ordering::SeqCst)
    }

    /// Every access/refresh pair issued so far (minted or refreshed), oldest first: lets a test
    /// look for tokens in a client's logs.
    pub fn issued_tokens(&self) -> Vec<TokenPair> {
        lock(&self.inner.auth).issued().to_vec()
    }

    /// Changes the lifetime of access tokens issued from now on.
    pub fn set_access_token_ttl(&self, secs: i64) {
        lock(&self.inner.auth).set_ttl(secs);
    }
}

fn update_in(t: &mut Table, id: i64, fields: Map<String, Value>, stamp: Option<i64>) -> bool {
    let Some(Value::Object(mut obj)) = t.value(id) else {
        return false;
    };
    sync_ticket_status(t.rtype, &mut obj, &fields);
    obj.extend(fields);
    // Messages and comments have no change timestamp: an edit leaves `created` alone (Cerb edits
    // a comment silently), so only types with `updated` are stamped.
    if let Some(now) = stamp
        && t.rtype.has_updated()
    {
        obj.insert(t.rtype.ts_key().into(), Value::from(now));
    }
    t.put(id, &Value::Object(obj));
    true
}
