//! Record types, their search fields, and deterministic record generation.
//!
//! Generated rows are not stored: a row is its `(id, timestamp)` in the index and its JSON body is
//! rebuilt from `(seed, type, id, timestamp)` whenever it is served. That keeps a million-row table at
//! tens of bytes per row and makes every body identical across requests and runs. Rows changed through
//! the simulator's controls are stored as JSON bytes instead.
//!
//! Shapes follow the Cerb 10.4.10 fixtures (tickets) and CERB_API.md §3.4 (other types), including the
//! type drift a client must survive: contact and task `id` are strings, ticket `elapsed_*` are numeric
//! strings, `spam_score` is `0` in one row and `0.0001` in the next, `""`/`"N"`/`"S"` share a field,
//! `dob`/`location` can be null, subjects carry emoji, CJK, RTL text, quotes and control characters.

use std::io::Write as _;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::query::{FieldDef, Kind, Schema, Target};

/// The record types the simulator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RType {
    Ticket,
    Message,
    Comment,
    Contact,
    Org,
    Worker,
    Task,
}

/// Host used in `url`/`record_url` values.
const PUBLIC_URL: &str = "https://cerb.example";

impl RType {
    pub const ALL: [RType; 7] = [
        RType::Ticket,
        RType::Message,
        RType::Comment,
        RType::Contact,
        RType::Org,
        RType::Worker,
        RType::Task,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn alias(self) -> &'static str {
        match self {
            RType::Ticket => "ticket",
            RType::Message => "message",
            RType::Comment => "comment",
            RType::Contact => "contact",
            RType::Org => "org",
            RType::Worker => "worker",
            RType::Task => "task",
        }
    }

    pub fn context(self) -> &'static str {
        match self {
            RType::Ticket => "cerberusweb.contexts.ticket",
            RType::Message => "cerberusweb.contexts.message",
            RType::Comment => "cerberusweb.contexts.comment",
            RType::Contact => "cerberusweb.contexts.contact",
            RType::Org => "cerberusweb.contexts.org",
            RType::Worker => "cerberusweb.contexts.worker",
            RType::Task => "cerberusweb.contexts.task",
        }
    }

    /// Accepts the alias, a plural, or the full context id, as Cerb does.
    pub fn from_name(s: &str) -> Option<RType> {
        let s = s.to_ascii_lowercase();
        RType::ALL.into_iter().find(|t| {
            s == t.alias()
                || s == t.context()
                || s == format!("{}s", t.alias())
                || (*t == RType::Org && (s == "organization" || s == "organizations"))
        })
    }

    /// The dictionary key holding the indexed timestamp.
    pub fn ts_key(self) -> &'static str {
        match self {
            RType::Contact => "updated_at",
            RType::Message | RType::Comment => "created",
            _ => "updated",
        }
    }

    /// Whether the type has an `updated:` filter (keyset types) or only `created` (append-only).
    pub fn has_updated(self) -> bool {
        !matches!(self, RType::Message | RType::Comment)
    }

    /// Contact and task ids are JSON strings.
    pub fn id_is_string(self) -> bool {
        matches!(self, RType::Contact | RType::Task)
    }

    fn salt(self) -> u64 {
        0x9E37_79B9_7F4A_7C15u64.wrapping_mul(self as u64 + 1)
    }
}

impl Schema for RType {
    fn field(&self, name: &str) -> Option<FieldDef> {
        let f = |target, kind| Some(FieldDef { target, kind });
        use Kind::*;
        use Target::*;
        if name == "id" {
            return f(Id, Number);
        }
        match (self, name) {
            (t, "updated") if t.has_updated() => f(Ts, Date),
            (RType::Message | RType::Comment, "created") => f(Ts, Date),
            (RType::Ticket, "created") => f(Key("created"), Date),
            (RType::Ticket, "closed") => f(Key("closed"), Date),
            (RType::Ticket, "status") => f(Key("status_id"), Status),
            (RType::Ticket, "importance") => f(Key("importance"), Number),
            (RType::Ticket, "subject") => f(Key("subject"), Text),
            (RType::Ticket, "mask") => f(Key("mask"), Text),
            (RType::Ticket, "owner.id") => f(Key("owner_id"), Number),
            (RType::Ticket, "org.id") => f(Key("org_id"), Number),
            (RType::Ticket, "group.id") => f(Key("group_id"), Number),
            (RType::Ticket, "spam.training") => f(Key("spam_training"), Text),
            (RType::Message, "ticket.id") => f(Key("ticket_id"), Number),
            (RType::Message, "isOutgoing") => f(Key("is_outgoing"), Bool),
            (RType::Comment, "comment") => f(Key("comment"), Text),
            (RType::Contact, "created") => f(Key("created_at"), Date),
            (RType::Contact, "name") => f(Key("name"), Text),
            (RType::Contact, "org.id") => f(Key("org_id"), Number),
            (RType::Org, "created") => f(Key("created"), Date),
            (RType::Org, "name") => f(Key("name"), Text),
            (RType::Org, "country") => f(Key("country"), Text),
            (RType::Worker, "firstName") => f(Key("first_name"), Text),
            (RType::Worker, "lastName") => f(Key("last_name"), Text),
            (RType::Worker, "isDisabled") => f(Key("is_disabled"), Bool),
            (RType::Task, "created") => f(Key("created"), Date),
            (RType::Task, "title") => f(Key("title"), Text),
            (RType::Task, "status") => f(Key("status"), Text),
            (RType::Task, "isCompleted") => f(Key("is_completed"), Bool),
            (RType::Task, "importance") => f(Key("importance"), Number),
            _ => None,
        }
    }

    fn text_key(&self) -> &'static str {
        "_label"
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random source of one row's body.
fn row_rng(seed: u64, t: RType, id: i64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(seed ^ t.salt() ^ mix(id as u64)))
}

/// The generated index of one type: ascending ids with gaps (so a late write can take an unused id
/// below the maximum) and timestamps over the 30 days before `anchor`, with a few "bulk" seconds
/// shared by many rows.
pub fn generate_index(seed: u64, t: RType, n: usize, anchor: i64) -> Vec<(i64, i64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed ^ t.salt() ^ 0xA5A5));
    let span: i64 = 30 * 86_400;
    let hot: Vec<i64> = (0..(n / 2000).max(1))
        .map(|_| anchor - rng.random_range(60..span))
        .collect();
    let mut id = 0i64;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        id += if rng.random_bool(0.85) {
            1
        } else {
            rng.random_range(2..5)
        };
        let ts = if rng.random_bool(0.15) {
            hot[rng.random_range(0..hot.len())]
        } else {
            anchor - rng.random_range(1..span)
        };
        out.push((id, ts));
    }
    out
}

/// A small JSON object writer: generated bodies are hot (served at 100k+ rows/s), so they are written
/// directly instead of through a `serde_json::Map`.
struct W(Vec<u8>);

impl W {
    fn new() -> Self {
        let mut v = Vec::with_capacity(1200);
        v.push(b'{');
        W(v)
    }
    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(b',');
        }
        self.0.push(b'"');
        self.0.extend_from_slice(k.as_bytes());
        self.0.extend_from_slice(b"\":");
    }
    fn s(&mut self, k: &str, v: &str) {
        self.key(k);
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.0, v);
    }
    fn i(&mut self, k: &str, v: i64) {
        self.key(k);
        // Writing into a Vec cannot fail.
        let _ = write!(self.0, "{v}");
    }
    fn f(&mut self, k: &str, v: f64) {
        self.key(k);
        let _ = serde_json::to_writer(&mut self.0, &v);
    }
    fn b(&mut self, k: &str, v: bool) {
        self.key(k);
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
    }
    fn null(&mut self, k: &str) {
        self.key(k);
        self.0.extend_from_slice(b"null");
    }
    fn id(&mut self, t: RType, id: i64) {
        if t.id_is_string() {
            self.s("id", &id.to_string())
        } else {
            self.i("id", id)
        }
    }
    fn done(mut self) -> Vec<u8> {
        self.0.push(b'}');
        self.0
    }
}

const SUBJECTS: &[&str] = &[
    "Invoice question",
    "Can't log in to the portal",
    "Rechnung für März – bitte prüfen",
    "Заказ не пришёл",
    "请帮我重置密码",
    "注文がまだ届きません",
    "🚀 Launch checklist 🎉",
    "Re: Re: Fwd: URGENT!!",
    "",
    "Quote \"special\" <chars> & back\\slash",
    "Tab\tand\nnewline in subject",
    "مرحبا، أحتاج مساعدة",
    "Refund for order #4471",
    "Ça ne marche pas 😞",
    "{{not a template}} in user text",
];
const FIRST: &[&str] = &[
    "Ana", "Bjørn", "Chloé", "Dmitri", "Eun-ji", "Fatima", "李", "Zoë", "O'Brien", "",
];
const LAST: &[&str] = &[
    "García",
    "Müller",
    "Nakamura",
    "Smith",
    "Ødegaard",
    "Wang",
    "Nguyễn",
    "Kowalski",
];
const COUNTRIES: &[&str] = &[
    "Germany",
    "Japan",
    "United States",
    "Brasil",
    "",
    "Côte d'Ivoire",
];
const COMMENTS: &[&str] = &[
    "Called the customer, waiting on logs.",
    "Escalated to tier 2 🔥",
    "",
    "Customer says: \"it worked yesterday\"",
    "顧客に返信済み",
    "Line one\nline two\n\ttabbed",
];

fn pick<'a>(rng: &mut ChaCha8Rng, v: &'a [&'a str]) -> &'a str {
    v[rng.random_range(0..v.len())]
}

fn mask(rng: &mut ChaCha8Rng) -> String {
    let l = |rng: &mut ChaCha8Rng| char::from(b'A' + rng.random_range(0..26u8));
    format!(
        "{}{}{}-{:05}-{:03}",
        l(rng),
        l(rng),
        l(rng),
        rng.random_range(0..100_000),
        rng.random_range(0..1000)
    )
}

/// The JSON body of a generated row.
pub fn gen_body(seed: u64, t: RType, id: i64, ts: i64) -> Vec<u8> {
    let mut r = row_rng(seed, t, id);
    let mut w = W::new();
    w.s("_context", t.context());
    w.s("_type", t.alias());
    match t {
        RType::Ticket => {
            let m = mask(&mut r);
            let mut subject = pick(&mut r, SUBJECTS).to_string();
            if r.random_bool(0.5) && !subject.is_empty() {
                subject.push_str(&format!(" #{id}"));
            }
            let status_id: i64 = match r.random_range(0..100) {
                0..55 => 0,
                55..70 => 1,
                70..90 => 2,
                _ => 3,
            };
            let created = (ts - r.random_range(0..5 * 86_400)).max(0);
            let closed = if status_id == 2 {
                r.random_range(created..=ts)
            } else {
                0
            };
            let n_in = r.random_range(0..6i64);
            let n_out = r.random_range(0..6i64);
            let first_msg = id * 3;
            w.s("_label", &format!("[#{m}] {subject}"));
            w.i("closed_at", closed);
            w.i("closed", closed);
            w.i("created", created);
            w.s(
                "elapsed_response_first",
                &r.random_range(0..90_000).to_string(),
            );
            w.s(
                "elapsed_resolution_first",
                &if closed > 0 {
                    (closed - created).to_string()
                } else {
                    "0".into()
                },
            );
            w.s(
                "elapsed_status_open",
                &r.random_range(0..500_000).to_string(),
            );
            w.i("id", id);
            w.i("importance", r.random_range(0..=100));
            w.i(
                "last_opened_at",
                if r.random_bool(0.5) { created } else { 0 },
            );
            w.s("mask", &m);
            w.i("num_messages", n_in + n_out);
            w.i("num_messages_in", n_in);
            w.i("num_messages_out", n_out);
            w.i(
                "org_id",
                if r.random_bool(0.3) {
                    0
                } else {
                    r.random_range(1..500)
                },
            );
            w.i(
                "reopen_date",
                if status_id == 1 && r.random_bool(0.5) {
                    ts + 86_400
                } else {
                    0
                },
            );
            match r.random_range(0..3) {
                0 => w.i("spam_score", 0),
                1 => w.f("spam_score", 0.0001),
                _ => w.f("spam_score", (r.random_range(1..10_000) as f64) / 10_000.0),
            }
            w.s("spam_training", ["", "N", "S"][r.random_range(0..3)]);
            w.i("status_id", status_id);
            w.s("subject", &subject);
            w.i("updated", ts);
            w.s(
                "status",
                ["open", "waiting", "closed", "deleted"][status_id as usize],
            );
            let url = format!("{PUBLIC_URL}/profiles/ticket/{m}");
            w.s("url", &url);
            w.s("record_url", &url);
            w.i("group_id", r.random_range(1..6));
            w.i("bucket_id", r.random_range(1..16));
            w.i(
                "initial_message_id",
                if n_in + n_out > 0 { first_msg } else { 0 },
            );
            w.i(
                "initial_response_message_id",
                if n_out > 0 { first_msg + 1 } else { 0 },
            );
            w.i(
                "latest_message_id",
                if n_in + n_out > 0 {
                    first_msg + n_in + n_out - 1
                } else {
                    0
                },
            );
            w.i(
                "owner_id",
                if r.random_bool(0.4) {
                    0
                } else {
                    r.random_range(1..20)
                },
            );
            for (key, ctx) in [
                ("group__context", "cerberusweb.contexts.group"),
                ("bucket__context", "cerberusweb.contexts.bucket"),
                ("initial_message__context", "cerberusweb.contexts.message"),
                (
                    "initial_response_message__context",
                    "cerberusweb.contexts.message",
                ),
                ("latest_message__context", "cerberusweb.contexts.message"),
                ("owner__context", "cerberusweb.contexts.worker"),
                ("org__context", "cerberusweb.contexts.org"),
            ] {
                w.s(key, ctx);
            }
        }
        RType::Message => {
            let out = r.random_bool(0.4);
            w.s("_label", pick(&mut r, SUBJECTS));
            w.i("created", ts);
            w.i("id", id);
            w.i("is_broadcast", 0);
            w.i("is_not_sent", i64::from(r.random_bool(0.02)));
            w.i("is_outgoing", i64::from(out));
            w.s("record_url", &format!("{PUBLIC_URL}/profiles/message/{id}"));
            w.i(
                "response_time",
                if out { r.random_range(0..90_000) } else { 0 },
            );
            w.i("sender_id", r.random_range(1..2000));
            w.i("storage_size", r.random_range(200..200_000));
            w.i("ticket_id", (id / 3).max(1));
            w.i("worker_id", if out { r.random_range(1..20) } else { 0 });
            w.i(
                "html_attachment_id",
                if r.random_bool(0.3) {
                    r.random_range(1..10_000)
                } else {
                    0
                },
            );
            w.s("ticket__context", "cerberusweb.contexts.ticket");
            w.s("sender__context", "cerberusweb.contexts.address");
            w.s("worker__context", "cerberusweb.contexts.worker");
        }
        RType::Comment => {
            let text = pick(&mut r, COMMENTS);
            w.s("_label", text);
            w.s("author__context", "cerberusweb.contexts.worker");
            w.i("author_id", r.random_range(1..20));
            w.s("comment", text);
            w.s("context", "cerberusweb.contexts.ticket");
            w.i("context_id", r.random_range(1..100_000));
            w.i("created", ts);
            w.i("id", id);
            w.i("is_markdown", i64::from(r.random_bool(0.5)));
            w.s("record_url", &format!("{PUBLIC_URL}/profiles/comment/{id}"));
            w.s("target__context", "cerberusweb.contexts.ticket");
        }
        RType::Contact => {
            let first = pick(&mut r, FIRST);
            let last = pick(&mut r, LAST);
            let name = format!("{first} {last}").trim().to_string();
            w.s("_label", &name);
            w.id(t, id);
            w.i("created_at", (ts - r.random_range(0..400 * 86_400)).max(0));
            if r.random_bool(0.6) {
                w.null("dob");
            } else {
                w.s(
                    "dob",
                    &format!(
                        "19{:02}-{:02}-{:02}",
                        r.random_range(40..100),
                        r.random_range(1..13),
                        r.random_range(1..29)
                    ),
                );
            }
            w.i("email_id", r.random_range(1..5000));
            w.s("first_name", first);
            w.s("gender", ["", "M", "F"][r.random_range(0..3)]);
            w.s(
                "language",
                ["en_US", "de_DE", "ja_JP", ""][r.random_range(0..4)],
            );
            w.i("last_login_at", if r.random_bool(0.5) { 0 } else { ts });
            w.s("last_name", last);
            if r.random_bool(0.5) {
                w.null("location")
            } else {
                w.s("location", pick(&mut r, COUNTRIES))
            }
            w.s("mobile", "");
            w.s("name", &name);
            w.i(
                "org_id",
                if r.random_bool(0.3) {
                    0
                } else {
                    r.random_range(1..500)
                },
            );
            w.s("phone", &format!("+1 555 {:04}", r.random_range(0..10_000)));
            w.s("record_url", &format!("{PUBLIC_URL}/profiles/contact/{id}"));
            w.s(
                "timezone",
                ["America/New_York", "Europe/Berlin", "Asia/Tokyo", ""][r.random_range(0..4)],
            );
            w.s("title", "");
            w.i("updated_at", ts);
            w.s("email__context", "cerberusweb.contexts.address");
            w.s("org__context", "cerberusweb.contexts.org");
        }
        RType::Org => {
            let name = format!(
                "{} {}",
                pick(&mut r, LAST),
                ["GmbH", "K.K.", "Inc.", "Ltda", "& Söhne", ""][r.random_range(0..6)]
            );
            let name = name.trim().to_string();
            w.s("_label", &name);
            w.i("id", id);
            w.s("name", &name);
            w.s("street", &format!("{} Main St", r.random_range(1..999)));
            w.s(
                "city",
                ["Berlin", "東京", "Springfield", "", "São Paulo"][r.random_range(0..5)],
            );
            w.s("province", "");
            w.s("postal", &format!("{:05}", r.random_range(0..100_000)));
            w.s("country", pick(&mut r, COUNTRIES));
            w.s("phone", "");
            w.s(
                "website",
                if r.random_bool(0.5) {
                    "https://example.org"
                } else {
                    ""
                },
            );
            w.i("created", (ts - r.random_range(0..400 * 86_400)).max(0));
            w.i("updated", ts);
            w.i(
                "email_id",
                if r.random_bool(0.5) {
                    0
                } else {
                    r.random_range(1..5000)
                },
            );
            w.s("record_url", &format!("{PUBLIC_URL}/profiles/org/{id}"));
            w.s("email__context", "cerberusweb.contexts.address");
        }
        RType::Worker => {
            let first = pick(&mut r, FIRST);
            let last = pick(&mut r, LAST);
            let full = format!("{first} {last}").trim().to_string();
            w.s("_label", &full);
            w.i("id", id);
            w.s("first_name", first);
            w.s("last_name", last);
            w.s("full_name", &full);
            w.s("title", ["Support", "Team lead", ""][r.random_range(0..3)]);
            w.i("email_id", r.random_range(1..5000));
            w.i("is_superuser", i64::from(id == 1));
            w.i("is_disabled", i64::from(r.random_bool(0.1)));
            w.s("mention_name", &format!("worker{id}"));
            w.s("at_mention_name", &format!("@worker{id}"));
            w.s("language", "en_US");
            w.s("timezone", "Europe/Berlin");
            w.s("gender", ["", "M", "F"][r.random_range(0..3)]);
            w.null("dob");
            if r.random_bool(0.5) {
                w.null("location")
            } else {
                w.s("location", pick(&mut r, COUNTRIES))
            }
            w.s("mobile", "");
            w.s("phone", "");
            w.i("updated", ts);
            w.s("record_url", &format!("{PUBLIC_URL}/profiles/worker/{id}"));
            w.s("email__context", "cerberusweb.contexts.address");
        }
        RType::Task => {
            let done = r.random_bool(0.4);
            let title = pick(&mut r, SUBJECTS);
            w.s("_label", title);
            w.id(t, id);
            w.s("title", title);
            w.s("status", if done { "completed" } else { "open" });
            w.b("is_completed", done);
            w.i("completed", if done { ts } else { 0 });
            w.i(
                "due",
                if r.random_bool(0.5) {
                    ts + r.random_range(0..30 * 86_400)
                } else {
                    0
                },
            );
            w.i("created", (ts - r.random_range(0..30 * 86_400)).max(0));
            w.i("updated", ts);
            w.i("importance", r.random_range(0..=100));
            w.i(
                "owner_id",
                if r.random_bool(0.5) {
                    0
                } else {
                    r.random_range(1..20)
                },
            );
            w.i("reopen", 0);
            w.s("record_url", &format!("{PUBLIC_URL}/profiles/task/{id}"));
            w.s("owner__context", "cerberusweb.contexts.worker");
        }
    }
    w.done()
}

/// Custom field values of a row (ticket only), as strings like Cerb sends them with `expand=custom_`.
pub fn gen_custom(seed: u64, t: RType, id: i64) -> Vec<(&'static str, String)> {
    match t {
        RType::Ticket => {
            let mut r = row_rng(seed ^ 0xC0FFEE, t, id);
            vec![("1", r.random_range(0..100).to_string())]
        }
        _ => Vec::new(),
    }
}

/// A message's body text (only with `expand=content`).
pub fn gen_content(seed: u64, id: i64) -> String {
    let mut r = row_rng(seed ^ 0xBEEF, RType::Message, id);
    format!(
        "Hello,\n\n{}\n\n-- \nSent from the simulator",
        pick(&mut r, COMMENTS)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_deterministic_valid_json_with_the_indexed_values() {
        for t in RType::ALL {
            let a = gen_body(7, t, 42, 1_700_000_000);
            assert_eq!(a, gen_body(7, t, 42, 1_700_000_000));
            let v: serde_json::Value = serde_json::from_slice(&a).expect("valid JSON");
            assert_eq!(v[t.ts_key()], 1_700_000_000);
            if t.id_is_string() {
                assert_eq!(v["id"], "42");
            } else {
                assert_eq!(v["id"], 42);
            }
        }
    }

    #[test]
    fn index_has_gaps_and_shared_seconds() {
        let idx = generate_index(1, RType::Ticket, 5000, 2_000_000_000);
        assert!(idx.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(
            idx.last().map(|l| l.0).unwrap_or(0) > 5000,
            "ids must leave gaps"
        );
        let mut counts = std::collections::HashMap::new();
        for (_, ts) in &idx {
            *counts.entry(*ts).or_insert(0) += 1;
        }
        assert!(
            counts.values().any(|c| *c >= 50),
            "some seconds are shared by many rows"
        );
        assert!(idx.iter().all(|(_, ts)| *ts < 2_000_000_000));
    }
}
