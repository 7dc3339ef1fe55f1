//! Fault injection: which fault a search request gets, and what each fault looks like on the wire.
//!
//! Scripted faults ([`super::Sim::push_fault`]) are served first, in order. Otherwise a seeded
//! random draw against the fault rate picks one of the *transient* faults (429 in every
//! `Retry-After` form, 500/502/503, stall, truncated body, reset, query timeout). Maintenance
//! (a 302 then 503 pages) is scripted only.
//! Non-transient faults (`__status:"error"`, 401) are only ever scripted.

use rand::Rng;

use super::server::Response;
use super::{Fault, RetryAfter, Sim, lock};

/// The next fault for a search request, if any.
/// A scripted [`Fault::Delay`] at the head of the queue, taken for a search request.
pub fn take_delay(sim: &Sim, path: &str) -> Option<std::time::Duration> {
    if !path.contains("/search") {
        return None;
    }
    let mut q = lock(&sim.inner.faults);
    match q.front() {
        Some(Fault::Delay(d)) => {
            let d = *d;
            q.pop_front();
            Some(d)
        }
        _ => None,
    }
}

pub fn next(sim: &Sim) -> Option<Fault> {
    if let Some(f) = lock(&sim.inner.faults).pop_front() {
        return Some(f);
    }
    let rate = *lock(&sim.inner.fault_rate);
    if rate <= 0.0 {
        return None;
    }
    let mut rng = lock(&sim.inner.fault_rng);
    if !rng.random_bool(rate.min(1.0)) {
        return None;
    }
    let now = sim.now();
    Some(match rng.random_range(0..11) {
        0 => Fault::RateLimit(RetryAfter::Seconds(1)),
        1 => Fault::RateLimit(RetryAfter::HttpDate(now + 1)),
        2 => Fault::RateLimit(RetryAfter::Zero),
        3 => Fault::RateLimit(RetryAfter::None),
        4 => Fault::ServerError(500),
        5 => Fault::ServerError(502),
        6 => Fault::ServerError(503),
        7 => Fault::Truncated,
        8 => Fault::Reset,
        9 => Fault::QueryTimeout,
        _ => Fault::Stall,
    })
}

fn html(status: u16, title: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>{status} {title}</title></head><body><h1>{title}</h1></body></html>\n"
    );
    Response::new(status, "text/html; charset=utf-8", body.into_bytes())
}

/// The response of a fault that is a plain response (not a stall, truncation or reset).
pub fn response(f: Fault) -> Option<Response> {
    Some(match f {
        Fault::RateLimit(ra) => {
            let mut r = html(429, "Too Many Requests");
            let v = match ra {
                RetryAfter::Seconds(s) => Some(s.to_string()),
                RetryAfter::HttpDate(t) => Some(http_date(t)),
                RetryAfter::Zero => Some("0".to_string()),
                RetryAfter::None => None,
            };
            if let Some(v) = v {
                r.headers.push(("Retry-After".into(), v));
            }
            r
        }
        Fault::ServerError(code) => html(
            code,
            match code {
                400 => "Bad Request",
                403 => "Forbidden",
                404 => "Not Found",
                502 => "Bad Gateway",
                503 => "Service Unavailable",
                504 => "Gateway Timeout",
                _ => "Internal Server Error",
            },
        ),
        Fault::Maintenance => {
            let mut r = Response::new(302, "text/html; charset=utf-8", Vec::new());
            r.headers.push(("Location".into(), "/update/locked".into()));
            r
        }
        Fault::StatusError => Response::json(
            200,
            format!(
                r#"{{"__status":"error","__version":"{}","__build":{},"__error":"ERROR","message":"An unexpected error occurred."}}"#,
                super::CERB_VERSION,
                super::CERB_BUILD
            ),
        ),
        Fault::Unauthorized => Response::json(401, super::auth::DENIED.to_string()),
        Fault::BadBody => html(200, "Please sign in to continue"),
        Fault::Stall
        | Fault::StallBody
        | Fault::Truncated
        | Fault::Reset
        | Fault::QueryTimeout
        | Fault::Delay(_) => {
            return None;
        }
    })
}

/// Cerb's upgrade-lock page.
pub fn maintenance_page() -> Response {
    let body = "<!DOCTYPE html>\n<html><head><title>Cerb update in progress</title></head><body><h1>Cerb update in progress</h1><p>Please try again in a few minutes.</p></body></html>\n";
    Response::new(503, "text/html; charset=utf-8", body.as_bytes().to_vec())
}

/// An RFC 7231 date of a unix second (negative seconds clamp to the epoch).
pub fn http_date(t: i64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64))
}
