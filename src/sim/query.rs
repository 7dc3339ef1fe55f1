//! Cerb's search query language (`q=`), with Cerb 10.4.10's semantics — including the silently wrong
//! ones — so that a client is tested against what the real server does, not against what it should do.
//!
//! The pipeline is lexer → parser → [`Query`] (a predicate plus the `sort:`/`limit:`/`page:`
//! pseudo-filters) → [`plan`] (key ranges for the sorted indexes) and [`Expr::eval`] (the exact test
//! on one row). Rules reproduced (CERB_API.md §4):
//! - filters `name:value`, implicit AND, ` OR `/` AND `, `( … )`, `!( … )`; AND binds tighter than OR;
//! - an unknown filter, an unbalanced parenthesis, a dangling `OR`, Twig markup (`{{`, `{%`) or a
//!   pseudo-filter inside a group make the whole query match nothing (Cerb adds a `false` param);
//! - a top-level `OR` (not wrapped in parentheses) matches nothing;
//! - dates: `"A to B"` inclusive; a single value `V` means `V..now`; `>`/`>=`/`<`/`=` prefixes fail to
//!   parse so the lower bound becomes 0 and everything up to `now` (and NULL) matches; `0`/`never`/empty
//!   mean `= 0`; `(since:… until:…)`; `@unix`, ISO strings, date-only strings and day-unit relatives
//!   snapping to midnight (the worker timezone is taken as UTC);
//! - numbers: `N`, `!N`, `>N`, `>=N`, `<N`, `<=N`, `A...B`, `"A to B"`, `[a,b]`, `![a,b]`; a
//!   non-numeric value is cast like MySQL does (leading digits, else 0);
//! - `sort:` with several keys and `-`, unknown keys dropped; `limit:` clamped 1..250; `page:` clamped
//!   1..2001.

use serde_json::Value;

/// Which value of a row a filter reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The record id (indexed; int or numeric string in JSON).
    Id,
    /// The type's change timestamp (`updated`, `updated_at`, or `created` for append-only types;
    /// indexed).
    Ts,
    /// Any other dictionary key (read from the record body).
    Key(&'static str),
}

/// What kind of filter a search field is; decides how its value is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Number,
    Date,
    /// Ticket status: `o`/`w`/`c`/`d` or the words, matched against `status_id`.
    Status,
    Text,
    Bool,
}

/// A search field of one record type.
#[derive(Clone, Copy, Debug)]
pub struct FieldDef {
    pub target: Target,
    pub kind: Kind,
}

/// Resolves a filter name (as typed in `q`) for the record type being searched.
pub trait Schema {
    fn field(&self, name: &str) -> Option<FieldDef>;
    /// The key bare words (fulltext) are matched against.
    fn text_key(&self) -> &'static str;
}

#[derive(Clone, Debug, PartialEq)]
pub enum NumTest {
    Eq(i64),
    Ne(i64),
    Gt(i64),
    Ge(i64),
    Lt(i64),
    Le(i64),
    Between(i64, i64),
    In(Vec<i64>),
    NotIn(Vec<i64>),
}

/// An inclusive date range; `null_ok` adds `IS NULL` (Cerb does so when the lower bound is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateRange {
    pub lo: i64,
    pub hi: i64,
    pub null_ok: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    Num(NumTest),
    Date(DateRange),
    Status { ids: Vec<i64>, negate: bool },
    Text { needle: String, negate: bool },
    Bool(bool),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Atom {
    pub target: Target,
    pub test: Test,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    True,
    False,
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Atom(Atom),
}

/// One `sort:` key that the type knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SortKey {
    pub target: Target,
    pub desc: bool,
}

/// A parsed `q`.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub expr: Expr,
    pub sort: Vec<SortKey>,
    /// `limit:` from `q`, already clamped to 1..250.
    pub limit: Option<i64>,
    /// `page:` from `q`, already clamped to 1..2001.
    pub page: Option<i64>,
}

/// A row as the evaluator sees it: the indexed values directly, other keys on demand.
pub trait Row {
    fn id(&self) -> i64;
    fn ts(&self) -> Option<i64>;
    fn key(&mut self, key: &str) -> Option<Value>;
}

// ---------------------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    LParen,
    NotLParen,
    RParen,
    Or,
    And,
    /// `name:value`; `quoted` when the value was in double quotes.
    Field {
        name: String,
        value: String,
        quoted: bool,
        negated_quote: bool,
    },
    /// `name:(k:v k:v)` (the advanced date form).
    FieldGroup {
        name: String,
        pairs: Vec<(String, String)>,
    },
    Word(String),
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Lexer<'a> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Reads `"…"` (the opening quote at `self.i`); `None` if it never closes.
    fn quoted(&mut self) -> Option<String> {
        self.i += 1;
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i] != b'"' {
            self.i += 1;
        }
        if self.i >= self.s.len() {
            return None;
        }
        let v = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        self.i += 1;
        Some(v)
    }

    /// An unquoted run: up to whitespace or a closing parenthesis.
    fn bare(&mut self) -> String {
        let start = self.i;
        while self.i < self.s.len()
            && !self.s[self.i].is_ascii_whitespace()
            && self.s[self.i] != b')'
        {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    fn field_name_len(&self) -> usize {
        let mut j = self.i;
        while j < self.s.len()
            && (self.s[j].is_ascii_alphanumeric() || self.s[j] == b'_' || self.s[j] == b'.')
        {
            j += 1;
        }
        if j > self.i && j < self.s.len() && self.s[j] == b':' {
            j - self.i
        } else {
            0
        }
    }

    fn tokens(mut self) -> Result<Vec<Tok>, ()> {
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            let Some(c) = self.peek() else { break };
            match c {
                b'(' => {
                    self.i += 1;
                    out.push(Tok::LParen);
                }
                b'!' if self.s.get(self.i + 1) == Some(&b'(') => {
                    self.i += 2;
                    out.push(Tok::NotLParen);
                }
                b')' => {
                    self.i += 1;
                    out.push(Tok::RParen);
                }
                b'"' => {
                    let w = self.quoted().ok_or(())?;
                    out.push(Tok::Word(w));
                }
                _ => {
                    let n = self.field_name_len();
                    if n == 0 {
                        let w = self.bare();
                        out.push(match w.as_str() {
                            "OR" => Tok::Or,
                            "AND" => Tok::And,
                            _ => Tok::Word(w),
                        });
                        continue;
                    }
                    let name = String::from_utf8_lossy(&self.s[self.i..self.i + n]).into_owned();
                    self.i += n + 1;
                    match self.peek() {
                        Some(b'"') => {
                            let v = self.quoted().ok_or(())?;
                            out.push(Tok::Field {
                                name,
                                value: v,
                                quoted: true,
                                negated_quote: false,
                            });
                        }
                        Some(b'!') if self.s.get(self.i + 1) == Some(&b'"') => {
                            self.i += 1;
                            let v = self.quoted().ok_or(())?;
                            out.push(Tok::Field {
                                name,
                                value: v,
                                quoted: true,
                                negated_quote: true,
                            });
                        }
                        Some(b'(') => {
                            self.i += 1;
                            let mut pairs = Vec::new();
                            loop {
                                self.skip_ws();
                                match self.peek() {
                                    None => return Err(()),
                                    Some(b')') => {
                                        self.i += 1;
                                        break;
                                    }
                                    _ => {}
                                }
                                let n = self.field_name_len();
                                if n == 0 {
                                    return Err(());
                                }
                                let k = String::from_utf8_lossy(&self.s[self.i..self.i + n])
                                    .into_owned();
                                self.i += n + 1;
                                let v = if self.peek() == Some(b'"') {
                                    self.quoted().ok_or(())?
                                } else {
                                    self.bare()
                                };
                                pairs.push((k, v));
                            }
                            out.push(Tok::FieldGroup { name, pairs });
                        }
                        _ => {
                            let v = self.bare();
                            out.push(Tok::Field {
                                name,
                                value: v,
                                quoted: false,
                                negated_quote: false,
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------------
// Parser

/// Raised inside the parser; every variant makes Cerb answer "success, total 0".
#[derive(Debug)]
struct Invalid;

struct Parser<'a, S: Schema> {
    toks: Vec<Tok>,
    i: usize,
    schema: &'a S,
    now: i64,
}

enum Item {
    Expr(Expr),
    Pseudo(Tok),
}

impl<S: Schema> Parser<'_, S> {
    /// Parses a sequence up to `)` or the end. Returns the OR-groups of AND-items.
    fn seq(&mut self, top: bool) -> Result<Vec<Vec<Item>>, Invalid> {
        let mut groups: Vec<Vec<Item>> = vec![Vec::new()];
        let mut expect_term = true;
        while self.i < self.toks.len() {
            let t = self.toks[self.i].clone();
            self.i += 1;
            match t {
                Tok::RParen => {
                    if top {
                        return Err(Invalid);
                    }
                    self.i -= 1;
                    break;
                }
                Tok::Or => {
                    if expect_term {
                        return Err(Invalid);
                    }
                    groups.push(Vec::new());
                    expect_term = true;
                }
                Tok::And => {
                    if expect_term {
                        return Err(Invalid);
                    }
                    expect_term = true;
                }
                Tok::LParen | Tok::NotLParen => {
                    let inner = self.seq(false)?;
                    if self.toks.get(self.i) != Some(&Tok::RParen) {
                        return Err(Invalid);
                    }
                    self.i += 1;
                    let e = combine(inner)?;
                    let e = if t == Tok::NotLParen {
                        Expr::Not(Box::new(e))
                    } else {
                        e
                    };
                    push_item(&mut groups, Item::Expr(e));
                    expect_term = false;
                }
                Tok::Field { ref name, .. }
                    if matches!(name.as_str(), "sort" | "limit" | "page") =>
                {
                    push_item(&mut groups, Item::Pseudo(t.clone()));
                    expect_term = false;
                }
                other => {
                    let e = self.atom(other)?;
                    push_item(&mut groups, Item::Expr(e));
                    expect_term = false;
                }
            }
        }
        if expect_term && (groups.len() > 1 || !groups[0].is_empty()) {
            return Err(Invalid);
        }
        Ok(groups)
    }

    fn atom(&self, t: Tok) -> Result<Expr, Invalid> {
        match t {
            Tok::Word(w) => Ok(Expr::Atom(Atom {
                target: Target::Key(self.schema.text_key()),
                test: Test::Text {
                    needle: w,
                    negate: false,
                },
            })),
            Tok::Field {
                name,
                value,
                quoted,
                negated_quote,
            } => {
                let def = self.schema.field(&name).ok_or(Invalid)?;
                let test = match def.kind {
                    Kind::Number => Test::Num(parse_num(&value, quoted)),
                    Kind::Date => Test::Date(date_filter(&value, quoted, self.now)),
                    Kind::Status => parse_status(&value),
                    Kind::Text => {
                        let (neg, v) = match value.strip_prefix('!') {
                            Some(rest) if !quoted => (true, rest.to_string()),
                            _ => (negated_quote, value),
                        };
                        Test::Text {
                            needle: v.trim_matches('*').to_string(),
                            negate: neg,
                        }
                    }
                    Kind::Bool => Test::Bool(matches!(
                        value.to_ascii_lowercase().as_str(),
                        "y" | "yes" | "true" | "1"
                    )),
                };
                Ok(Expr::Atom(Atom {
                    target: def.target,
                    test,
                }))
            }
            Tok::FieldGroup { name, pairs } => {
                let def = self.schema.field(&name).ok_or(Invalid)?;
                if def.kind != Kind::Date {
                    return Err(Invalid);
                }
                let mut lo = 0;
                let mut hi = self.now;
                for (k, v) in &pairs {
                    match k.as_str() {
                        "since" => lo = parse_date(v, self.now, false).unwrap_or(0),
                        "until" => hi = parse_date(v, self.now, true).unwrap_or(0),
                        // days:, dom:, weeks:, months:, times: are accepted and not modelled.
                        "days" | "dom" | "weeks" | "months" | "times" => {}
                        _ => return Err(Invalid),
                    }
                }
                Ok(Expr::Atom(Atom {
                    target: def.target,
                    test: Test::Date(DateRange {
                        lo,
                        hi,
                        null_ok: lo == 0,
                    }),
                }))
            }
            _ => Err(Invalid),
        }
    }
}

fn push_item(groups: &mut [Vec<Item>], it: Item) {
    if let Some(g) = groups.last_mut() {
        g.push(it);
    }
}

/// Builds an expression from OR-groups of items; a pseudo-filter anywhere but the top level is an
/// unknown filter.
fn combine(groups: Vec<Vec<Item>>) -> Result<Expr, Invalid> {
    let mut ors = Vec::new();
    for g in groups {
        let mut ands = Vec::new();
        for it in g {
            match it {
                Item::Expr(e) => ands.push(e),
                Item::Pseudo(_) => return Err(Invalid),
            }
        }
        ors.push(match ands.len() {
            0 => Expr::True,
            1 => ands.pop().unwrap_or(Expr::True),
            _ => Expr::And(ands),
        });
    }
    Ok(if ors.len() == 1 {
        ors.pop().unwrap_or(Expr::True)
    } else {
        Expr::Or(ors)
    })
}

/// Parses `q` for one record type. Never fails: what Cerb treats as invalid becomes [`Expr::False`].
pub fn parse<S: Schema>(q: &str, schema: &S, now: i64) -> Query {
    let nothing = Query {
        expr: Expr::False,
        sort: Vec::new(),
        limit: None,
        page: None,
    };
    // Cerb renders `q` as a Twig template first; we do not evaluate templates, and treat any template
    // markup as the syntax error a stray `{{` is in Cerb (the query then matches nothing).
    if q.contains("{{") || q.contains("{%") || q.contains("{#") {
        return nothing;
    }
    let Ok(toks) = (Lexer {
        s: q.as_bytes(),
        i: 0,
    })
    .tokens() else {
        return nothing;
    };
    let mut p = Parser {
        toks,
        i: 0,
        schema,
        now,
    };
    let Ok(groups) = p.seq(true) else {
        return nothing;
    };
    if groups.len() > 1 {
        // A top-level OR: Cerb no longer extracts the pseudo-filters and the query matches nothing.
        return nothing;
    }
    let mut sort = Vec::new();
    let mut limit = None;
    let mut page = None;
    let mut ands = Vec::new();
    for it in groups.into_iter().flatten() {
        match it {
            Item::Expr(e) => ands.push(e),
            Item::Pseudo(Tok::Field { name, value, .. }) => match name.as_str() {
                "sort" => {
                    sort.clear();
                    for k in value.split(',') {
                        let (desc, k) = match k.strip_prefix('-') {
                            Some(r) => (true, r),
                            None => (false, k.strip_prefix('+').unwrap_or(k)),
                        };
                        if let Some(d) = schema.field(k) {
                            sort.push(SortKey {
                                target: d.target,
                                desc,
                            });
                        }
                    }
                }
                "limit" => limit = Some(mysql_int(&value).clamp(1, 250)),
                _ => page = Some(mysql_int(&value).clamp(1, 2001)),
            },
            Item::Pseudo(_) => return nothing,
        }
    }
    let expr = match ands.len() {
        0 => Expr::True,
        1 => ands.pop().unwrap_or(Expr::True),
        _ => Expr::And(ands),
    };
    Query {
        expr,
        sort,
        limit,
        page,
    }
}

/// PHP `intval`/MySQL cast of a string: optional sign and leading digits, anything else 0.
pub fn mysql_int(s: &str) -> i64 {
    let s = s.trim();
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let digits: &str = &rest[..rest.bytes().take_while(u8::is_ascii_digit).count()];
    let v = digits
        .parse::<i64>()
        .unwrap_or(if digits.is_empty() { 0 } else { i64::MAX });
    if neg { -v } else { v }
}

fn parse_list(v: &str) -> Vec<i64> {
    v.trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(mysql_int)
        .collect()
}

fn parse_num(v: &str, quoted: bool) -> NumTest {
    if quoted {
        if let Some((a, b)) = v.split_once(" to ") {
            return NumTest::Between(mysql_int(a), mysql_int(b));
        }
        return NumTest::Eq(mysql_int(v));
    }
    if let Some(r) = v.strip_prefix("![") {
        return NumTest::NotIn(parse_list(r));
    }
    if v.starts_with('[') {
        return NumTest::In(parse_list(v));
    }
    if let Some(r) = v.strip_prefix(">=") {
        return NumTest::Ge(mysql_int(r));
    }
    if let Some(r) = v.strip_prefix("<=") {
        return NumTest::Le(mysql_int(r));
    }
    if let Some(r) = v.strip_prefix('>') {
        return NumTest::Gt(mysql_int(r));
    }
    if let Some(r) = v.strip_prefix('<') {
        return NumTest::Lt(mysql_int(r));
    }
    if let Some(r) = v.strip_prefix('!') {
        return NumTest::Ne(mysql_int(r));
    }
    if let Some((a, b)) = v.split_once("...") {
        return NumTest::Between(mysql_int(a), mysql_int(b));
    }
    NumTest::Eq(mysql_int(v))
}

fn parse_status(v: &str) -> Test {
    let (negate, v) = match v.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, v),
    };
    let ids = v
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| match s.trim().to_ascii_lowercase().as_str() {
            "o" | "open" => 0,
            "w" | "waiting" => 1,
            "c" | "closed" => 2,
            "d" | "deleted" => 3,
            _ => -1,
        })
        .collect();
    Test::Status { ids, negate }
}

/// A date filter value as Cerb 10.4.10 reads it (see the module docs).
pub fn date_filter(v: &str, quoted: bool, now: i64) -> DateRange {
    let t = v.trim();
    if quoted && let Some((a, b)) = t.split_once(" to ") {
        let lo = parse_date(a, now, false).unwrap_or(0);
        let hi = parse_date(b, now, true).unwrap_or(0);
        return DateRange {
            lo,
            hi,
            null_ok: lo == 0,
        };
    }
    if t.is_empty() || t == "0" || t.eq_ignore_ascii_case("never") {
        return DateRange {
            lo: 0,
            hi: 0,
            null_ok: false,
        };
    }
    let lo = parse_date(t, now, false).unwrap_or(0);
    DateRange {
        lo,
        hi: now,
        null_ok: lo == 0,
    }
}

const DAY: i64 = 86_400;

fn midnight(t: i64) -> i64 {
    t.div_euclid(DAY) * DAY
}

/// A subset of PHP `strtotime` in UTC: unix integers, `@unix`, `now`, `big bang`, ISO date-times,
/// date-only strings, `today`/`yesterday`/`tomorrow`, and relatives (`-2 days`, `3 hours ago`).
/// Date-only strings and day-or-longer relatives snap to 00:00:00 (`end`: 23:59:59).
pub fn parse_date(s: &str, now: i64, end: bool) -> Option<i64> {
    let s = s.trim();
    let snap = |t: i64| {
        if end {
            midnight(t) + DAY - 1
        } else {
            midnight(t)
        }
    };
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        "" => return None,
        "now" => return Some(now),
        "big bang" => return Some(0),
        "today" => return Some(snap(now)),
        "yesterday" => return Some(snap(now - DAY)),
        "tomorrow" => return Some(snap(now + DAY)),
        _ => {}
    }
    if let Some(r) = s.strip_prefix('@') {
        return r.trim().parse::<i64>().ok();
    }
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp());
    }
    for f in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(d) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(d.and_utc().timestamp());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(snap(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp()));
    }
    // Relative: "[+-]N unit[s] [ago]".
    let mut parts = lower.split_whitespace();
    let n: i64 = parts.next()?.parse().ok()?;
    let unit = parts.next()?.trim_end_matches('s');
    let ago = match parts.next() {
        Some("ago") => true,
        None => false,
        Some(_) => return None,
    };
    let n = if ago { -n } else { n };
    let (secs, by_day) = match unit {
        "sec" | "second" => (1, false),
        "min" | "minute" => (60, false),
        "hour" => (3600, false),
        "day" => (DAY, true),
        "week" => (7 * DAY, true),
        "month" => (30 * DAY, true),
        "year" => (365 * DAY, true),
        _ => return None,
    };
    let t = now.checked_add(n.checked_mul(secs)?)?;
    Some(if by_day { snap(t) } else { t })
}

// ---------------------------------------------------------------------------------------------------
// Evaluation

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => Some(mysql_int(s)),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

impl NumTest {
    pub fn matches(&self, x: i64) -> bool {
        match self {
            NumTest::Eq(n) => x == *n,
            NumTest::Ne(n) => x != *n,
            NumTest::Gt(n) => x > *n,
            NumTest::Ge(n) => x >= *n,
            NumTest::Lt(n) => x < *n,
            NumTest::Le(n) => x <= *n,
            NumTest::Between(a, b) => x >= *a && x <= *b,
            NumTest::In(v) => v.contains(&x),
            NumTest::NotIn(v) => !v.contains(&x),
        }
    }
}

impl DateRange {
    pub fn matches(&self, x: Option<i64>) -> bool {
        match x {
            None => self.null_ok,
            Some(t) => t >= self.lo && t <= self.hi,
        }
    }
}

impl Expr {
    /// The exact test of one row.
    pub fn eval<R: Row>(&self, row: &mut R) -> bool {
        match self {
            Expr::True => true,
            Expr::False => false,
            Expr::And(v) => v.iter().all(|e| e.eval(row)),
            Expr::Or(v) => v.iter().any(|e| e.eval(row)),
            Expr::Not(e) => !e.eval(row),
            Expr::Atom(a) => a.eval(row),
        }
    }
}

impl Atom {
    fn eval<R: Row>(&self, row: &mut R) -> bool {
        let num = |row: &mut R| -> Option<i64> {
            match self.target {
                Target::Id => Some(row.id()),
                Target::Ts => row.ts(),
                Target::Key(k) => row.key(k).as_ref().and_then(as_i64),
            }
        };
        match &self.test {
            Test::Num(t) => num(row).is_some_and(|x| t.matches(x)),
            Test::Date(r) => r.matches(num(row)),
            Test::Status { ids, negate } => {
                let s = match self.target {
                    Target::Key(k) => row.key(k).as_ref().and_then(as_i64),
                    _ => num(row),
                };
                s.is_some_and(|s| ids.contains(&s) != *negate)
            }
            Test::Bool(b) => {
                let v = match self.target {
                    Target::Key(k) => row.key(k),
                    _ => None,
                };
                let truthy = match v {
                    Some(Value::Bool(x)) => x,
                    Some(v) => as_i64(&v).unwrap_or(0) != 0,
                    None => false,
                };
                truthy == *b
            }
            Test::Text { needle, negate } => {
                let v = match self.target {
                    Target::Key(k) => row.key(k),
                    Target::Id => Some(Value::from(row.id())),
                    Target::Ts => row.ts().map(Value::from),
                };
                let hay = match v {
                    Some(Value::String(s)) => s,
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                let found = hay.to_lowercase().contains(&needle.to_lowercase());
                found != *negate
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Planning: which parts of the sorted indexes can hold a match.

/// A box in `(ts, id)` space; `exact` when every row inside it matches (no other test applies).
/// `ts` uses `i64::MIN` for NULL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyBox {
    pub ts: (i64, i64),
    pub id: (i64, i64),
    pub exact: bool,
}

const FULL: (i64, i64) = (i64::MIN, i64::MAX);
const MAX_BOXES: usize = 64;

impl KeyBox {
    fn full(exact: bool) -> Self {
        KeyBox {
            ts: FULL,
            id: FULL,
            exact,
        }
    }
    fn intersect(&self, o: &KeyBox) -> Option<KeyBox> {
        let ts = (self.ts.0.max(o.ts.0), self.ts.1.min(o.ts.1));
        let id = (self.id.0.max(o.id.0), self.id.1.min(o.id.1));
        (ts.0 <= ts.1 && id.0 <= id.1).then_some(KeyBox {
            ts,
            id,
            exact: self.exact && o.exact,
        })
    }
    pub fn ts_full(&self) -> bool {
        self.ts == FULL
    }
    pub fn id_full(&self) -> bool {
        self.id == FULL
    }
}

/// The union of boxes that holds every match of `e` (a superset; rows are still tested one by one).
pub fn plan(e: &Expr) -> Vec<KeyBox> {
    match e {
        Expr::True => vec![KeyBox::full(true)],
        Expr::False => Vec::new(),
        Expr::Not(_) => vec![KeyBox::full(false)],
        Expr::Or(v) => {
            let mut out: Vec<KeyBox> = v.iter().flat_map(plan).collect();
            if out.len() > MAX_BOXES {
                out = vec![hull(&out)];
            }
            out
        }
        Expr::And(v) => {
            let mut acc = vec![KeyBox::full(true)];
            for e in v {
                let p = plan(e);
                let mut next = Vec::new();
                for a in &acc {
                    for b in &p {
                        if let Some(c) = a.intersect(b) {
                            next.push(c);
                        }
                    }
                }
                if next.len() > MAX_BOXES {
                    next = vec![hull(&next)];
                }
                acc = next;
            }
            acc
        }
        Expr::Atom(a) => match (&a.test, a.target) {
            (Test::Num(t), Target::Id) => num_boxes(t, |r| KeyBox {
                ts: FULL,
                id: r,
                exact: true,
            }),
            (Test::Num(t), Target::Ts) => num_boxes(t, |r| KeyBox {
                ts: r,
                id: FULL,
                exact: true,
            }),
            (Test::Date(r), Target::Ts) => {
                if r.lo > r.hi && !r.null_ok {
                    Vec::new()
                } else if r.null_ok {
                    // NULL sorts as i64::MIN; negative timestamps would also fall in this range.
                    vec![KeyBox {
                        ts: (i64::MIN, r.hi),
                        id: FULL,
                        exact: false,
                    }]
                } else {
                    vec![KeyBox {
                        ts: (r.lo, r.hi),
                        id: FULL,
                        exact: true,
                    }]
                }
            }
            _ => vec![KeyBox::full(false)],
        },
    }
}

fn num_boxes(t: &NumTest, mk: impl Fn((i64, i64)) -> KeyBox) -> Vec<KeyBox> {
    let r = match t {
        NumTest::Eq(n) => (*n, *n),
        NumTest::Gt(n) => (n.saturating_add(1), i64::MAX),
        NumTest::Ge(n) => (*n, i64::MAX),
        NumTest::Lt(n) => (i64::MIN, n.saturating_sub(1)),
        NumTest::Le(n) => (i64::MIN, *n),
        NumTest::Between(a, b) => {
            if a > b {
                return Vec::new();
            }
            (*a, *b)
        }
        NumTest::In(v) if v.len() <= MAX_BOXES => return v.iter().map(|n| mk((*n, *n))).collect(),
        _ => return vec![KeyBox::full(false)],
    };
    vec![mk(r)]
}

fn hull(v: &[KeyBox]) -> KeyBox {
    let mut h = KeyBox {
        ts: (i64::MAX, i64::MIN),
        id: (i64::MAX, i64::MIN),
        exact: false,
    };
    for b in v {
        h.ts = (h.ts.0.min(b.ts.0), h.ts.1.max(b.ts.1));
        h.id = (h.id.0.min(b.id.0), h.id.1.max(b.id.1));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    struct T;
    impl Schema for T {
        fn field(&self, name: &str) -> Option<FieldDef> {
            match name {
                "id" => Some(FieldDef {
                    target: Target::Id,
                    kind: Kind::Number,
                }),
                "updated" => Some(FieldDef {
                    target: Target::Ts,
                    kind: Kind::Date,
                }),
                "status" => Some(FieldDef {
                    target: Target::Key("status_id"),
                    kind: Kind::Status,
                }),
                _ => None,
            }
        }
        fn text_key(&self) -> &'static str {
            "subject"
        }
    }

    #[test]
    fn keyset_query_plans_two_disjoint_exact_boxes() {
        let q = parse(
            r#"(updated:"11 to 20" OR (updated:"10 to 10" id:>5)) sort:updated,id"#,
            &T,
            100,
        );
        assert_eq!(q.sort.len(), 2);
        let p = plan(&q.expr);
        assert_eq!(
            p,
            vec![
                KeyBox {
                    ts: (11, 20),
                    id: FULL,
                    exact: true
                },
                KeyBox {
                    ts: (10, 10),
                    id: (6, i64::MAX),
                    exact: true
                }
            ]
        );
    }

    #[test]
    fn wrong_forms_parse_as_cerb_does() {
        let r = |q: &str| match parse(q, &T, 100).expr {
            Expr::Atom(Atom {
                test: Test::Date(d),
                ..
            }) => d,
            other => panic!("not a date atom: {other:?}"),
        };
        assert_eq!(
            r("updated:>50"),
            DateRange {
                lo: 0,
                hi: 100,
                null_ok: true
            }
        );
        assert_eq!(
            r("updated:50"),
            DateRange {
                lo: 50,
                hi: 100,
                null_ok: false
            }
        );
        assert_eq!(
            r("updated:never"),
            DateRange {
                lo: 0,
                hi: 0,
                null_ok: false
            }
        );
        assert_eq!(parse("updated:1 OR id:2", &T, 100).expr, Expr::False);
        assert_eq!(parse("(id:2", &T, 100).expr, Expr::False);
        assert_eq!(parse("nosuch:2", &T, 100).expr, Expr::False);
        assert_eq!(parse("(id:2 sort:id)", &T, 100).expr, Expr::False);
    }

    #[test]
    fn relative_day_units_snap_to_midnight() {
        let now = 10 * DAY + 5000;
        assert_eq!(parse_date("-1 day", now, false), Some(9 * DAY));
        assert_eq!(parse_date("-24 hours", now, false), Some(9 * DAY + 5000));
        assert_eq!(parse_date("2024-01-15", 0, true), Some(1_705_363_199));
        assert_eq!(parse_date("@17", 0, false), Some(17));
        assert_eq!(parse_date(">17", 0, false), None);
    }
}
