//! Each injected fault, as a client sees it on the wire.

use std::time::Duration;

use highwater::sim::{Clock, Fault, RetryAfter, Sim, SimConfig};

use super::{TOKEN, search};

const NOW: i64 = 1_800_000_000;

async fn sim() -> Sim {
    Sim::start(SimConfig {
        records: 20,
        clock: Clock::Fixed(NOW),
        stall: Duration::from_secs(5),
        ..SimConfig::default()
    })
    .await
    .expect("sim")
}

fn url(sim: &Sim) -> String {
    format!(
        "{}/rest/records/ticket/search.json?q=sort:id&limit=5",
        sim.base_url()
    )
}

async fn send(sim: &Sim) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()?
        .get(url(sim))
        .bearer_auth(TOKEN)
        .send()
        .await
}

#[tokio::test]
async fn rate_limits_carry_each_retry_after_form() {
    let sim = sim().await;
    let cases = [
        (RetryAfter::Seconds(7), Some("7".to_string())),
        (
            RetryAfter::Seconds(31_536_000_000),
            Some("31536000000".to_string()),
        ),
        (RetryAfter::Zero, Some("0".to_string())),
        (
            RetryAfter::HttpDate(NOW + 30),
            Some("Fri, 15 Jan 2027 08:00:30 GMT".to_string()),
        ),
        (RetryAfter::None, None),
    ];
    for (ra, want) in cases {
        sim.push_fault(Fault::RateLimit(ra));
        let r = send(&sim).await.expect("response");
        assert_eq!(r.status().as_u16(), 429, "{ra:?}");
        let got = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ascii").to_string());
        assert_eq!(got, want, "{ra:?}");
    }
    // The queue is drained: the next request is served.
    let r = send(&sim).await.expect("response");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(sim.request_count(), 6);
}

#[tokio::test]
async fn server_errors_and_maintenance_are_html() {
    let sim = sim().await;
    for code in [500u16, 502, 503] {
        sim.push_fault(Fault::ServerError(code));
        let r = send(&sim).await.expect("response");
        assert_eq!(r.status().as_u16(), code);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with("text/html")
        );
        assert!(r.text().await.expect("body").contains("<html>"));
    }
    // Maintenance: Cerb redirects to /update/locked, which answers 503 HTML without Retry-After.
    sim.push_fault(Fault::Maintenance);
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = no_redirect
        .get(url(&sim))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("response");
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(r.headers()["location"], "/update/locked");
    sim.push_fault(Fault::Maintenance);
    let r = send(&sim).await.expect("response");
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_none());
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("Cerb update in progress")
    );
}

#[tokio::test]
async fn stall_truncation_and_reset_break_the_transfer() {
    let sim = sim().await;
    sim.push_fault(Fault::Stall);
    let err = send(&sim).await.expect_err("a stall never answers");
    assert!(err.is_timeout(), "{err}");

    sim.push_fault(Fault::Truncated);
    let r = send(&sim).await.expect("head arrives");
    let declared = r.content_length().expect("content-length");
    match r.bytes().await {
        Err(e) => assert!(e.is_body() || e.is_decode() || e.is_request(), "{e}"),
        Ok(b) => assert!((b.len() as u64) < declared, "body shorter than declared"),
    }

    sim.push_fault(Fault::Reset);
    let err = send(&sim).await.expect_err("reset");
    assert!(!err.is_timeout(), "a reset fails fast: {err}");

    // The connection-level faults do not stick.
    assert_eq!(send(&sim).await.expect("served").status().as_u16(), 200);
}

#[tokio::test]
async fn status_error_unauthorized_and_query_timeout() {
    let sim = sim().await;
    sim.push_fault(Fault::StatusError);
    let r = search(&sim, "ticket", "sort:id", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["__status"], "error");
    assert!(r.json()["__error"].is_string());

    sim.push_fault(Fault::Unauthorized);
    let r = search(&sim, "ticket", "sort:id", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["__status"], "error");

    sim.push_fault(Fault::QueryTimeout);
    let r = search(&sim, "ticket", "sort:id", &[("limit", "7")])
        .await
        .json();
    assert_eq!(r["__status"], "success");
    assert_eq!(r["total"], -1);
    assert_eq!(r["count"], 0);
    assert_eq!(r["limit"], 7);
    assert_eq!(r["results"], serde_json::json!([]));
}

#[tokio::test]
async fn random_faults_follow_the_rate() {
    let sim = Sim::start(SimConfig {
        records: 20,
        clock: Clock::Fixed(NOW),
        stall: Duration::from_millis(50),
        fault_rate: 0.5,
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let mut ok = 0;
    let mut failed = 0;
    for _ in 0..60 {
        match send(&sim).await {
            Ok(r) if r.status().as_u16() == 200 => match r.json::<serde_json::Value>().await {
                Ok(v) if v["total"] == 20 => ok += 1,
                _ => failed += 1,
            },
            _ => failed += 1,
        }
    }
    assert!(ok > 10 && failed > 10, "ok {ok} failed {failed}");
    sim.set_fault_rate(0.0);
    for _ in 0..5 {
        assert_eq!(send(&sim).await.expect("served").status().as_u16(), 200);
    }
}

#[tokio::test]
async fn date_header_follows_the_simulator_clock() {
    let sim = sim().await;
    let r = send(&sim).await.expect("response");
    let date = r.headers()["date"].to_str().expect("ascii").to_string();
    assert_eq!(date, "Fri, 15 Jan 2027 08:00:00 GMT");
    sim.set_clock(Clock::Fixed(NOW + 61));
    let r = send(&sim).await.expect("response");
    assert_eq!(r.headers()["date"], "Fri, 15 Jan 2027 08:01:01 GMT");
}

#[tokio::test]
async fn a_delay_holds_the_answer_back_then_answers_normally() {
    let sim = sim().await;
    sim.push_fault(Fault::Delay(Duration::from_millis(400)));
    let t = std::time::Instant::now();
    let r = search(&sim, "ticket", "sort:id", &[("limit", "5")]).await;
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.ids(), vec![1, 2, 3, 4, 5]);
    // Taken once: the next request is immediate.
    let t = std::time::Instant::now();
    assert_eq!(
        search(&sim, "ticket", "sort:id", &[("limit", "5")])
            .await
            .status,
        200
    );
    assert!(t.elapsed() < Duration::from_millis(400));
}

#[tokio::test]
async fn a_search_hook_runs_at_the_nth_search_before_it_is_answered() {
    let sim = sim().await;
    let s2 = sim.clone();
    sim.on_search(2, move || {
        s2.insert_raw(
            "ticket",
            serde_json::json!({"id": 1000, "updated": NOW - 1, "status_id": 0, "subject": "hooked"}),
        );
    });
    let first = search(&sim, "ticket", "id:>999", &[]).await;
    assert!(first.ids().is_empty());
    let second = search(&sim, "ticket", "id:>999", &[]).await;
    assert_eq!(
        second.ids(),
        vec![1000],
        "the hook's row is in the answer to search #2"
    );
}

#[tokio::test]
async fn a_body_can_stall_midway_and_a_200_can_carry_html() {
    let sim = sim().await;
    sim.push_fault(Fault::StallBody);
    let r = send(&sim).await.expect("the head arrives");
    assert_eq!(r.status().as_u16(), 200);
    let err = r.bytes().await.expect_err("the body never completes");
    assert!(err.is_timeout() || err.is_body(), "{err}");

    sim.push_fault(Fault::BadBody);
    let r = send(&sim).await.expect("response");
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.expect("body");
    assert!(text.starts_with("<!DOCTYPE html>"), "{text}");
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_err());
    assert_eq!(send(&sim).await.expect("served").status().as_u16(), 200);
}
