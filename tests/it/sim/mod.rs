//! Tests of the Cerb simulator: fidelity against recorded Cerb responses, query semantics, faults,
//! auth and the admin endpoints.

mod admin;
mod auth;
mod faults;
mod fidelity;
mod query;

use highwater::sim::{Clock, Sim, SimConfig};
use serde_json::{Value, json};

pub const TOKEN: &str = "test-token";

/// A simulator with no generated rows and a frozen clock.
pub async fn empty_sim(now: i64) -> Sim {
    Sim::start(SimConfig {
        records: 0,
        clock: Clock::Fixed(now),
        ..SimConfig::default()
    })
    .await
    .expect("sim starts")
}

/// Inserts a minimal ticket.
pub fn ticket(sim: &Sim, id: i64, updated: i64) {
    sim.insert_raw(
        "ticket",
        json!({"_context":"cerberusweb.contexts.ticket","id":id,"updated":updated,"status_id":0,"status":"open","importance":id % 7,"subject":format!("t{id}")}),
    );
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    /// Ids of `results`, as integers (contact/task ids are strings).
    pub fn ids(&self) -> Vec<i64> {
        self.json()["results"]
            .as_array()
            .expect("results array")
            .iter()
            .map(|r| match &r["id"] {
                Value::String(s) => s.parse().expect("numeric id"),
                v => v.as_i64().expect("int id"),
            })
            .collect()
    }
}

/// `GET /rest/records/{rtype}/search.json` with `q` and extra parameters, bearer-authenticated.
pub async fn search(sim: &Sim, rtype: &str, q: &str, extra: &[(&str, &str)]) -> Reply {
    let mut params = vec![("q", q)];
    params.extend_from_slice(extra);
    get(
        sim,
        &format!("/rest/records/{rtype}/search.json"),
        &params,
        Some(TOKEN),
    )
    .await
}

pub async fn get(sim: &Sim, path: &str, params: &[(&str, &str)], token: Option<&str>) -> Reply {
    let client = reqwest::Client::new();
    let mut rb = client
        .get(format!("{}{path}", sim.base_url()))
        .query(params);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let resp = rb.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Reply {
        status,
        headers,
        text,
    }
}
