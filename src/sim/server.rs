//! A small HTTP/1.1 server on a tokio `TcpListener`, with Cerb's REST routes.
//!
//! Hand-written rather than hyper/axum because the faults need byte-level control of the connection:
//! a stall (read the request, send nothing), a body shorter than its `Content-Length`, a TCP reset.
//! Requests are parsed with `httparse` (head) plus `Content-Length` bodies; connections are kept alive
//! until the client closes them or sends `Connection: close`.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::data::{self, RType};
use super::query::{self, Expr};
use super::{CERB_BUILD, CERB_VERSION, Fault, Sim, auth, faults, lock};

/// Errors of one connection; they end that connection only.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("i/o on connection from {peer}: {source}")]
    Io {
        peer: String,
        source: std::io::Error,
    },
    #[error("bad request head from {peer}: {reason}")]
    BadRequest { peer: String, reason: String },
}

/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// An HTTP response.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }
    pub fn json(status: u16, body: String) -> Self {
        Response::new(status, "application/json; charset=utf-8", body.into_bytes())
    }
    pub fn text(status: u16, body: &str) -> Self {
        Response::new(status, "text/html; charset=UTF-8", body.as_bytes().to_vec())
    }
}

/// What to do with the connection after a request.
pub enum Action {
    Respond(Response),
    Stall,
    /// Head and half the body, then silence with the connection open.
    StallBody(Response),
    Truncated(Response),
    Reset,
}

/// A parsed request.
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn params(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect()
    }
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
}

fn status_text(s: u16) -> &'static str {
    match s {
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, sim: Sim, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let sim = sim.clone();
                    let rx = shutdown.clone();
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, peer.to_string(), sim, rx).await {
                            tracing::debug!(error = %e, "simulator connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "simulator accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: String,
    sim: Sim,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let io = |source| ServerError::Io {
        peer: peer.clone(),
        source,
    };
    stream.set_nodelay(true).map_err(io)?;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        // Read one request head.
        let (req, head_len, used, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Request::new(&mut headers);
            match r.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let method = r.method.unwrap_or("GET").to_string();
                    let target = r.path.unwrap_or("/");
                    let (path, query) = target.split_once('?').unwrap_or((target, ""));
                    let hs: Vec<(String, String)> = r
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    let cl = hs
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .map(|(_, v)| v.trim().parse::<usize>())
                        .transpose()
                        .map_err(|e| ServerError::BadRequest {
                            peer: peer.clone(),
                            reason: e.to_string(),
                        })?
                        .unwrap_or(0);
                    let close = r.version == Some(0)
                        || hs.iter().any(|(k, v)| {
                            k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close")
                        });
                    let req = Request {
                        method,
                        path: path.to_string(),
                        query: query.to_string(),
                        headers: hs,
                        body: Vec::new(),
                    };
                    break (req, n, n + cl, close);
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                    return Err(ServerError::BadRequest {
                        peer: peer.clone(),
                        reason: format!("request head over {MAX_HEAD} bytes"),
                    });
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    return Err(ServerError::BadRequest {
                        peer: peer.clone(),
                        reason: e.to_string(),
                    });
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::select! {
                r = stream.read(&mut chunk) => r.map_err(io)?,
                _ = shutdown.changed() => return Ok(()),
            };
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let mut req = req;
        while buf.len() < used {
            let mut chunk = vec![0u8; (used - buf.len()).min(65536)];
            let n = stream.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        req.body = buf[head_len..used].to_vec();
        buf.drain(..used);

        if let Some(d) = faults::take_delay(&sim, &req.path) {
            tokio::time::sleep(d).await;
        }
        match handle(&sim, &req) {
            Action::Respond(resp) => {
                write_response(&mut stream, &sim, &resp, None, close)
                    .await
                    .map_err(io)?;
                if close {
                    return Ok(());
                }
            }
            Action::Truncated(resp) => {
                let half = resp.body.len() / 2;
                write_response(&mut stream, &sim, &resp, Some(half), false)
                    .await
                    .map_err(io)?;
                let _ = stream.shutdown().await;
                return Ok(());
            }
            Action::Reset => {
                // A zero linger makes close send RST without blocking (the deprecation is about
                // non-zero lingers blocking the thread on drop).
                #[allow(deprecated)]
                stream
                    .set_linger(Some(std::time::Duration::ZERO))
                    .map_err(io)?;
                drop(stream);
                return Ok(());
            }
            Action::StallBody(resp) => {
                let half = resp.body.len() / 2;
                write_response(&mut stream, &sim, &resp, Some(half), false)
                    .await
                    .map_err(io)?;
                hold_silent(&mut stream, &sim, &mut shutdown).await;
                return Ok(());
            }
            Action::Stall => {
                hold_silent(&mut stream, &sim, &mut shutdown).await;
                return Ok(());
            }
        }
    }
}

/// Keep a connection open and silent until the client gives up, `stall` elapses or shutdown.
async fn hold_silent(stream: &mut TcpStream, sim: &Sim, shutdown: &mut watch::Receiver<bool>) {
    let mut sink = [0u8; 1024];
    let deadline = tokio::time::sleep(sim.inner.stall);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = stream.read(&mut sink) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = &mut deadline => return,
            _ = shutdown.changed() => return,
        }
    }
}

async fn write_response(
    stream: &mut TcpStream,
    sim: &Sim,
    r: &Response,
    cut: Option<usize>,
    close: bool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nDate: {}\r\nServer: cerb-sim\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        r.status,
        status_text(r.status),
        faults::http_date(sim.now()),
        r.content_type,
        r.body.len()
    );
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let body = &r.body[..cut.unwrap_or(r.body.len()).min(r.body.len())];
    if head.len() + body.len() < 16 * 1024 {
        let mut all = head.into_bytes();
        all.extend_from_slice(body);
        stream.write_all(&all).await?;
    } else {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
    }
    stream.flush().await
}

fn controller_error(code: &str, message: &str) -> Response {
    let msg = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".into());
    Response::json(
        200,
        format!(
            r#"{{"__status":"error","__version":"{CERB_VERSION}","__build":{CERB_BUILD},"__error":"{code}","message":{msg}}}"#
        ),
    )
}

/// Routes one request.
pub fn handle(sim: &Sim, req: &Request) -> Action {
    let path = req
        .path
        .strip_prefix("/index.php")
        .unwrap_or(&req.path)
        .to_string();
    if let Some(rest) = path.strip_prefix("/_sim/") {
        return Action::Respond(super::admin::handle(sim, req, rest));
    }
    if path == "/oauth/access_token" {
        return Action::Respond(token_endpoint(sim, req));
    }
    if path == "/update/locked" {
        return Action::Respond(faults::maintenance_page());
    }
    let Some(rest) = path.strip_prefix("/rest/") else {
        return Action::Respond(Response::new(
            404,
            "text/html; charset=utf-8",
            b"<html><body>Not Found</body></html>".to_vec(),
        ));
    };
    let mut segs: Vec<&str> = rest.split('/').collect();
    // Legacy per-type controllers (`/rest/tickets/search.json`) answer like the records controller.
    if segs.len() == 2 && RType::from_name(segs[0]).is_some() {
        segs.insert(0, "records");
    }
    let is_search = segs.len() == 3 && segs[0] == "records" && segs[2].starts_with("search");
    if is_search {
        let n = sim.inner.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let due: Vec<super::SearchHook> = {
            let mut hooks = super::lock(&sim.inner.hooks);
            let (now, later): (Vec<_>, Vec<_>) = hooks.drain(..).partition(|(at, _)| *at == n);
            *hooks = later;
            now.into_iter().map(|(_, f)| f).collect()
        };
        for f in due {
            f();
        }
        if let Some(f) = faults::next(sim) {
            match f {
                Fault::Stall => return Action::Stall,
                Fault::Reset => return Action::Reset,
                Fault::Truncated => {
                    if let Err(r) = authorize(sim, req) {
                        return Action::Respond(r);
                    }
                    return Action::Truncated(search(sim, req, segs[1], false));
                }
                Fault::StallBody => {
                    if let Err(r) = authorize(sim, req) {
                        return Action::Respond(r);
                    }
                    return Action::StallBody(search(sim, req, segs[1], false));
                }
                Fault::QueryTimeout => {
                    if let Err(r) = authorize(sim, req) {
                        return Action::Respond(r);
                    }
                    return Action::Respond(search(sim, req, segs[1], true));
                }
                other => {
                    if let Some(r) = faults::response(other) {
                        return Action::Respond(r);
                    }
                }
            }
        }
    }
    if let Err(r) = authorize(sim, req) {
        return Action::Respond(r);
    }
    let last = segs.last().copied().unwrap_or("");
    if !last.ends_with(".json") {
        let action = last.split('.').next().unwrap_or(last);
        return Action::Respond(Response::new(
            200,
            "text/plain; charset=utf-8",
            format!("'{action}' is not implemented.").into_bytes(),
        ));
    }
    if segs[0] != "records" || segs.len() != 3 {
        let cmd = serde_json::to_string(&format!("Unknown command ({rest})")).unwrap_or_default();
        return Action::Respond(Response::json(
            200,
            format!(r#"{{"__status":"error","message":{cmd}}}"#),
        ));
    }
    if RType::from_name(segs[1]).is_none() {
        return Action::Respond(controller_error("ERROR_NOT_FOUND", "Record not found."));
    }
    if is_search {
        if req.method != "GET" {
            return Action::Respond(controller_error(
                "ERROR_NOT_IMPLEMENTED",
                "Not implemented.",
            ));
        }
        return Action::Respond(search(sim, req, segs[1], false));
    }
    Action::Respond(record_endpoint(
        sim,
        req,
        segs[1],
        last.trim_end_matches(".json"),
    ))
}

/// Checks bearer or signature auth; `Err` is the 401 to send. A signature covers the path as
/// requested, `/index.php` prefix included (Cerb signs `REQUEST_URI`).
fn authorize(sim: &Sim, req: &Request) -> Result<(), Response> {
    let now = sim.now();
    if let Some(h) = req.header("authorization") {
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .unwrap_or("")
            .trim();
        return lock(&sim.inner.auth)
            .bearer(token, now)
            .map_err(|b| Response::json(401, b.to_string()));
    }
    if let Some(h) = req.header("cerb-auth").or_else(|| req.header("cerb5-auth")) {
        let date = req.header("x-date").or_else(|| req.header("date"));
        let r = auth::SignedRequest {
            header: h,
            date,
            verb: &req.method,
            path: &req.path,
            query: &req.query,
            body: &req.body,
        };
        return lock(&sim.inner.auth)
            .signed(&r, now)
            .map_err(|b| Response::json(401, b));
    }
    Err(Response::json(401, auth::NO_AUTH.to_string()))
}

fn token_endpoint(sim: &Sim, req: &Request) -> Response {
    sim.inner.token_requests.fetch_add(1, Ordering::SeqCst);
    if req.method != "POST" {
        return Response::text(
            400,
            "The authorization grant type is not supported by the authorization server.",
        );
    }
    let form = req.form();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match get("grant_type") {
        Some("refresh_token") => {
            let Some(rt) = get("refresh_token") else {
                return Response::text(
                    400,
                    "The request is missing a required parameter, includes an invalid parameter value, includes a parameter more than once, or is otherwise malformed.",
                );
            };
            let now = sim.now();
            match lock(&sim.inner.auth).refresh(rt, get("client_id"), get("client_secret"), now) {
                Ok(p) => Response::json(
                    200,
                    serde_json::json!({"token_type":"Bearer","expires_in":p.expires_in,"access_token":p.access_token,"refresh_token":p.refresh_token}).to_string(),
                ),
                Err((code, msg)) => Response::text(code, msg),
            }
        }
        Some("authorization_code") => Response::text(
            400,
            "The provided authorization grant (e.g., authorization code, resource owner credentials) or refresh token is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.",
        ),
        _ => Response::text(400, auth::UNSUPPORTED_GRANT),
    }
}

fn envelope_prefix() -> String {
    format!(r#"{{"__build":{CERB_BUILD},"__status":"success","__version":"{CERB_VERSION}""#)
}

/// Adds what `expand=` asks for to a row.
fn expand_row(sim: &Sim, t: RType, id: i64, bytes: Bytes, expand: &[String]) -> Bytes {
    let want_custom = expand.iter().any(|e| e.starts_with("custom"));
    let want_content = t == RType::Message && expand.iter().any(|e| e == "content");
    if !want_custom && !want_content {
        return bytes;
    }
    let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(&bytes) else {
        return bytes;
    };
    if want_custom {
        let fields = data::gen_custom(sim.inner.seed, t, id);
        if fields.is_empty() {
            // PHP encodes an empty custom-field array as a JSON array.
            m.insert("custom".into(), Value::Array(Vec::new()));
        } else {
            let mut c = Map::new();
            for (k, v) in &fields {
                c.insert((*k).to_string(), Value::from(v.clone()));
            }
            m.insert("custom".into(), Value::Object(c));
            for (k, v) in fields {
                m.insert(format!("custom_{k}"), Value::from(v));
            }
        }
    }
    if want_content {
        m.insert(
            "content".into(),
            Value::from(data::gen_content(sim.inner.seed, id)),
        );
    }
    Bytes::from(serde_json::to_vec(&Value::Object(m)).unwrap_or_default())
}

/// `GET /rest/records/{type}/search.json`. `timeout` answers Cerb's query-timeout envelope.
pub fn search(sim: &Sim, req: &Request, type_name: &str, timeout: bool) -> Response {
    let Some(t) = RType::from_name(type_name) else {
        return controller_error("ERROR_NOT_FOUND", "Record not found.");
    };
    let params = req.params();
    let get = |k: &str| {
        params
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    let limit_param = get("limit")
        .map(|v| query::mysql_int(v).clamp(1, 500))
        .unwrap_or(10);
    let page_param = get("page").map(query::mysql_int).unwrap_or(1);
    if get("show_results") == Some("0") {
        return Response::json(200, format!("{}}}", envelope_prefix()));
    }
    if timeout {
        return Response::json(
            200,
            format!(
                r#"{},"count":0,"limit":{limit_param},"page":{page_param},"results":[],"total":-1}}"#,
                envelope_prefix()
            ),
        );
    }
    let expand: Vec<String> = get("expand")
        .map(|e| e.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let now = sim.now();
    let q = query::parse(get("q").unwrap_or(""), &t, now);
    let limit = q.limit.unwrap_or(limit_param).max(1) as usize;
    let page = match q.page {
        Some(p) => (p - 1).max(0) as usize,
        None => (page_param - 1).max(0) as usize,
    };
    let expr = if sim.inner.ignore_keyset.load(Ordering::SeqCst) {
        Expr::True
    } else {
        q.expr.clone()
    };
    let (total, mut rows) = {
        let mut table = lock(&sim.inner.tables[t.index()]);
        let found = table.search(&q, &expr, limit, page);
        let rows: Vec<(i64, Bytes)> = found
            .ids
            .iter()
            .filter_map(|id| table.bytes(*id).map(|b| (*id, b)))
            .collect();
        (found.total, rows)
    };
    if sim.inner.ignore_sort.load(Ordering::SeqCst) && rows.len() > 1 {
        scramble(&mut rows);
    }
    let prefix = envelope_prefix();
    let size: usize = rows.iter().map(|(_, b)| b.len() + 1).sum::<usize>() + prefix.len() + 96;
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(prefix.as_bytes());
    body.extend_from_slice(
        format!(
            r#","count":{},"limit":{limit_param},"page":{page_param},"results":["#,
            rows.len()
        )
        .as_bytes(),
    );
    for (i, (id, b)) in rows.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let b = if expand.is_empty() {
            b
        } else {
            expand_row(sim, t, id, b, &expand)
        };
        body.extend_from_slice(&b);
    }
    body.extend_from_slice(format!(r#"],"total":{total}}}"#).as_bytes());
    Response::new(200, "application/json; charset=utf-8", body)
}

/// Reorders a page so that it is certainly not in its original order.
fn scramble<T>(rows: &mut [T]) {
    rows.reverse();
    if rows.len() > 2 {
        let mid = rows.len() / 2;
        rows.swap(0, mid);
    }
}

/// `GET`, `PUT`, `DELETE /rest/records/{type}/{id}.json`.
fn record_endpoint(sim: &Sim, req: &Request, type_name: &str, id_str: &str) -> Response {
    let Some(t) = RType::from_name(type_name) else {
        return controller_error("ERROR_NOT_FOUND", "Record not found.");
    };
    let Ok(id) = id_str.parse::<i64>() else {
        return controller_error(
            "ERROR_NOT_IMPLEMENTED",
            &format!("'{id_str}' is not implemented."),
        );
    };
    let not_found = || {
        controller_error(
            "ERROR_NOT_FOUND",
            &format!("Invalid record {} #{id}", t.context()),
        )
    };
    match req.method.as_str() {
        "GET" => match sim.get(t.alias(), id) {
            Some(v) => record_response(v),
            None => not_found(),
        },
        "PUT" | "PATCH" => {
            let mut fields = Map::new();
            for (k, v) in req.form() {
                let Some(name) = k.strip_prefix("fields[").and_then(|k| k.strip_suffix(']')) else {
                    continue;
                };
                if t == RType::Ticket && name == "status" {
                    let (sid, word) = match v.as_str() {
                        "o" | "open" => (0, "open"),
                        "w" | "waiting" => (1, "waiting"),
                        "c" | "closed" => (2, "closed"),
                        "d" | "deleted" => (3, "deleted"),
                        _ => return controller_error("ERROR_PARAM_INVALID", "Invalid status."),
                    };
                    fields.insert("status".into(), Value::from(word));
                    fields.insert("status_id".into(), Value::from(sid));
                    if sid == 2 {
                        let now = sim.now();
                        fields.insert("closed".into(), Value::from(now));
                        fields.insert("closed_at".into(), Value::from(now));
                    }
                    continue;
                }
                let val = v.parse::<i64>().map(Value::from).unwrap_or(Value::from(v));
                fields.insert(name.to_string(), val);
            }
            // Cerb's API PUT does not bump a ticket's `updated`; other types' DAO does.
            if !sim.update(t.alias(), id, fields, t != RType::Ticket) {
                return not_found();
            }
            sim.get(t.alias(), id)
                .map(record_response)
                .unwrap_or_else(not_found)
        }
        "DELETE" => {
            if sim.soft_delete(t.alias(), id) {
                Response::json(200, format!("{}}}", envelope_prefix()))
            } else {
                not_found()
            }
        }
        _ => controller_error("ERROR_NOT_IMPLEMENTED", "Not implemented."),
    }
}

/// A single record merged into the envelope, every key sorted (Cerb `ksort`s the whole response).
fn record_response(v: Value) -> Response {
    let mut all: Vec<(String, Value)> = match v {
        Value::Object(m) => m.into_iter().collect(),
        _ => Vec::new(),
    };
    all.push(("__build".into(), Value::from(CERB_BUILD)));
    all.push(("__status".into(), Value::from("success")));
    all.push(("__version".into(), Value::from(CERB_VERSION)));
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let m: Map<String, Value> = all.into_iter().collect();
    Response::json(200, Value::Object(m).to_string())
}
