//! The `/_sim/` admin endpoints: the in-process controls of [`Sim`] over HTTP, for the demo,
//! benchmarks and scripts driving a standalone `highwater simulate`. Bodies and answers are JSON;
//! the routes are listed in [`super::cli::ADMIN_HELP`]. They need no auth (the server binds loopback).

use serde_json::{Map, Value, json};

use super::server::{Request, Response};
use super::{Clock, Fault, RetryAfter, Sim};

/// Errors of an admin request, answered as 400 `{"error": …}`.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("body is not a JSON object: {0}")]
    Body(String),
    #[error("missing or invalid field `{0}`")]
    Field(&'static str),
    #[error("unknown fault `{0}`")]
    Fault(String),
    #[error("unknown admin route `{0}`")]
    Route(String),
}

fn ok(v: Value) -> Response {
    Response::json(200, v.to_string())
}

/// Parses a fault name: `429`, `429:seconds=N`, `429:date=UNIX`, `429:zero`, `429:none`, `500`,
/// `502`, `503` (any 5xx; 400, 403, 404, 408 too), `maintenance`, `stall`, `stall_body`, `truncated`, `reset`, `bad_body`,
/// `status_error`, `unauthorized`, `query_timeout`, `delay:MS`.
pub fn parse_fault(s: &str) -> Result<Fault, AdminError> {
    let bad = || AdminError::Fault(s.to_string());
    let (name, arg) = s.split_once(':').unwrap_or((s, ""));
    Ok(match name {
        "429" => Fault::RateLimit(match arg.split_once('=').unwrap_or((arg, "")) {
            ("" | "seconds", v) => RetryAfter::Seconds(if v.is_empty() {
                1
            } else {
                v.parse().map_err(|_| bad())?
            }),
            ("date", v) => RetryAfter::HttpDate(v.parse().map_err(|_| bad())?),
            ("zero", _) => RetryAfter::Zero,
            ("none", _) => RetryAfter::None,
            _ => return Err(bad()),
        }),
        "maintenance" => Fault::Maintenance,
        "stall" => Fault::Stall,
        "stall_body" => Fault::StallBody,
        "truncated" => Fault::Truncated,
        "reset" => Fault::Reset,
        "bad_body" => Fault::BadBody,
        "status_error" => Fault::StatusError,
        "unauthorized" => Fault::Unauthorized,
        "query_timeout" => Fault::QueryTimeout,
        d if d.starts_with("delay:") => match d[6..].parse::<u64>() {
            Ok(ms) => Fault::Delay(std::time::Duration::from_millis(ms)),
            Err(_) => return Err(bad()),
        },
        n => match n.parse::<u16>() {
            Ok(code @ (400 | 403 | 404 | 408 | 500..=599)) => Fault::ServerError(code),
            _ => return Err(bad()),
        },
    })
}

pub fn handle(sim: &Sim, req: &Request, route: &str) -> Response {
    match route_request(sim, req, route) {
        Ok(r) => r,
        Err(e) => Response::json(400, json!({ "error": e.to_string() }).to_string()),
    }
}

fn route_request(sim: &Sim, req: &Request, route: &str) -> Result<Response, AdminError> {
    if req.method == "GET" {
        return match route {
            "stats" => Ok(ok(
                json!({ "requests": sim.request_count(), "now": sim.now() }),
            )),
            "clock" => Ok(ok(json!({ "now": sim.now() }))),
            other => Err(AdminError::Route(other.to_string())),
        };
    }
    let body: Map<String, Value> = if req.body.is_empty() {
        Map::new()
    } else {
        serde_json::from_slice(&req.body).map_err(|e| AdminError::Body(e.to_string()))?
    };
    let s = |k: &'static str| {
        body.get(k)
            .and_then(Value::as_str)
            .ok_or(AdminError::Field(k))
    };
    let i = |k: &'static str| {
        body.get(k)
            .and_then(Value::as_i64)
            .ok_or(AdminError::Field(k))
    };
    let fields = || {
        body.get("fields")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    Ok(match route {
        "create" => ok(json!({ "id": sim.create(s("type")?, fields()) })),
        "update" => {
            let bump = body.get("bump").and_then(Value::as_bool).unwrap_or(false);
            ok(json!({ "ok": sim.update(s("type")?, i("id")?, fields(), bump) }))
        }
        "bulk-update" => {
            let ids: Vec<i64> = body
                .get("ids")
                .and_then(Value::as_array)
                .ok_or(AdminError::Field("ids"))?
                .iter()
                .filter_map(Value::as_i64)
                .collect();
            ok(json!({ "updated": sim.bulk_update(s("type")?, &ids, fields()) }))
        }
        "soft-delete" => ok(json!({ "ok": sim.soft_delete(s("type")?, i("id")?) })),
        "purge" => ok(json!({ "ok": sim.purge(s("type")?, i("id")?) })),
        "merge" => ok(json!({ "ok": sim.merge(s("type")?, i("from")?, i("into")?) })),
        "late-write" => ok(json!({ "id": sim.late_write(s("type")?, i("updated")?, fields()) })),
        "faults" => {
            if let Some(list) = body.get("push").and_then(Value::as_array) {
                let parsed: Result<Vec<Fault>, AdminError> = list
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .ok_or(AdminError::Field("push"))
                            .and_then(parse_fault)
                    })
                    .collect();
                for f in parsed? {
                    sim.push_fault(f);
                }
            }
            if let Some(r) = body.get("rate").and_then(Value::as_f64) {
                sim.set_fault_rate(r);
            }
            ok(json!({ "ok": true }))
        }
        "clock" => {
            let c = if let Some(t) = body.get("fixed").and_then(Value::as_i64) {
                Clock::Fixed(t)
            } else if let Some(o) = body.get("offset").and_then(Value::as_i64) {
                Clock::Offset(o)
            } else {
                Clock::Real
            };
            sim.set_clock(c);
            ok(json!({ "now": sim.now() }))
        }
        "ignore-keyset" => {
            sim.set_ignore_keyset(body.get("on").and_then(Value::as_bool).unwrap_or(true));
            ok(json!({ "ok": true }))
        }
        "ignore-sort" => {
            sim.set_ignore_sort(body.get("on").and_then(Value::as_bool).unwrap_or(true));
            ok(json!({ "ok": true }))
        }
        "oauth-mint" => {
            let p = sim.mint_oauth_tokens();
            ok(
                json!({ "access_token": p.access_token, "refresh_token": p.refresh_token, "expires_in": p.expires_in }),
            )
        }
        other => return Err(AdminError::Route(other.to_string())),
    })
}
