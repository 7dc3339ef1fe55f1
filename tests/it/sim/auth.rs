//! Auth as Cerb does it: 401 JSON for missing or bad bearer tokens, OAuth refresh rotation, access
//! token expiry, 400 plain text for unsupported grants, `Cerb-Auth` md5 signatures (±600 s).

use highwater::sim::{Clock, Sim, SimConfig};

use super::get;

const NOW: i64 = 1_800_000_000;
const PATH: &str = "/rest/records/ticket/search.json";

async fn sim(ttl: i64) -> Sim {
    Sim::start(SimConfig {
        records: 5,
        clock: Clock::Fixed(NOW),
        access_token_ttl: ttl,
        ..SimConfig::default()
    })
    .await
    .expect("sim")
}

async fn token_request(sim: &Sim, form: &[(&str, &str)]) -> (u16, String, String) {
    let r = reqwest::Client::new()
        .post(format!("{}/oauth/access_token", sim.base_url()))
        .form(form)
        .send()
        .await
        .expect("token endpoint");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.expect("body"))
}

#[tokio::test]
async fn missing_and_bad_bearer_tokens_get_401_json() {
    let sim = sim(3600).await;
    let r = get(&sim, PATH, &[], None).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (
            401,
            r#"{"__status":"error","message":"Unauthorized request"}"#
        )
    );
    let ct = r.headers["content-type"].to_str().expect("ascii");
    assert!(ct.starts_with("application/json"), "{ct}");
    let r = get(&sim, PATH, &[], Some("nope")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json()["message"],
        "The resource owner or authorization server denied the request."
    );
    assert_eq!(get(&sim, PATH, &[], Some("test-token")).await.status, 200);
}

#[tokio::test]
async fn refresh_rotates_and_revokes_the_old_access_token() {
    let sim = sim(3600).await;
    let first = sim.mint_oauth_tokens();
    assert_eq!(
        get(&sim, PATH, &[], Some(&first.access_token)).await.status,
        200
    );
    let (status, _, body) = token_request(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &first.refresh_token),
            ("client_id", "highwater"),
            ("client_secret", "sim-client-secret"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    let access = v["access_token"].as_str().expect("access");
    let refresh = v["refresh_token"].as_str().expect("refresh");
    assert_ne!(refresh, first.refresh_token);
    // The old access token is revoked at once, the new one works.
    assert_eq!(
        get(&sim, PATH, &[], Some(&first.access_token)).await.status,
        401
    );
    assert_eq!(get(&sim, PATH, &[], Some(access)).await.status, 200);
    // The old refresh token is rejected with plain text.
    let (status, _, body) = token_request(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &first.refresh_token),
        ],
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (401, "The refresh token is invalid.")
    );
    // Wrong client secret.
    let (status, _, _) = token_request(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_secret", "x"),
        ],
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn access_tokens_expire() {
    let sim = sim(100).await;
    let p = sim.mint_oauth_tokens();
    assert_eq!(
        get(&sim, PATH, &[], Some(&p.access_token)).await.status,
        200
    );
    sim.set_clock(Clock::Fixed(NOW + 99));
    assert_eq!(
        get(&sim, PATH, &[], Some(&p.access_token)).await.status,
        200
    );
    sim.set_clock(Clock::Fixed(NOW + 100));
    let r = get(&sim, PATH, &[], Some(&p.access_token)).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["__status"], "error");
    // Static tokens never expire; the refresh token still works after expiry.
    assert_eq!(get(&sim, PATH, &[], Some("test-token")).await.status, 200);
    let (status, _, _) = token_request(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &p.refresh_token),
        ],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unsupported_grants_get_400_plain_text() {
    let sim = sim(3600).await;
    for grant in ["client_credentials", "password", "nonsense"] {
        let (status, ct, body) =
            token_request(&sim, &[("grant_type", grant), ("client_id", "highwater")]).await;
        assert_eq!(status, 400, "{grant}");
        assert!(ct.starts_with("text/html"), "{ct}");
        assert_eq!(
            body,
            "The authorization grant type is not supported by the authorization server."
        );
        assert!(
            serde_json::from_str::<serde_json::Value>(&body).is_err(),
            "not JSON"
        );
    }
}

/// Sends a `Cerb-Auth` request signed with `secret` and the given date.
async fn signed(sim: &Sim, key: &str, secret: &str, date: &str, query: &str) -> (u16, String) {
    let sig = highwater::sim::auth::signature("GET", date, PATH, query, b"", secret);
    let r = reqwest::Client::new()
        .get(format!("{}{PATH}?{query}", sim.base_url()))
        .header("Cerb-Auth", format!("{key}:{sig}"))
        .header("Date", date)
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.text().await.expect("body"))
}

#[tokio::test]
async fn cerb_auth_signatures_and_the_600s_window() {
    let sim = sim(3600).await;
    let date = |t: i64| highwater::sim::faults::http_date(t);
    let q = "q=sort%3Aid&limit=2";
    let (s, _) = signed(&sim, "sim-key", "sim-secret", &date(NOW), q).await;
    assert_eq!(s, 200);
    // The query is signed sorted by name: the same pairs in another order verify too.
    let (s, _) = signed(
        &sim,
        "sim-key",
        "sim-secret",
        &date(NOW),
        "limit=2&q=sort%3Aid",
    )
    .await;
    assert_eq!(s, 200);
    for skew in [-600, 600] {
        assert_eq!(
            signed(&sim, "sim-key", "sim-secret", &date(NOW + skew), q)
                .await
                .0,
            200,
            "skew {skew}"
        );
    }
    for skew in [-601, 601] {
        let (s, body) = signed(&sim, "sim-key", "sim-secret", &date(NOW + skew), q).await;
        assert_eq!(
            (s, body.as_str()),
            (
                401,
                r#"{"__status":"error","message":"Access denied! (Invalid timestamp)"}"#
            )
        );
    }
    let (s, body) = signed(&sim, "sim-key", "wrong-secret", &date(NOW), q).await;
    assert_eq!((s, body.contains("checksum")), (401, true));
    let (s, body) = signed(&sim, "other-key", "sim-secret", &date(NOW), q).await;
    assert_eq!((s, body.contains("access key")), (401, true));
}

#[tokio::test]
async fn documented_signature_vector_is_accepted_over_http() {
    // CERB_API.md §2.2: POST /rest/tickets/search.json?show_meta=0, body expand=custom_&q=status%3Ao.
    let sim = Sim::start(SimConfig {
        records: 1,
        clock: Clock::Fixed(1_486_583_615 + 30),
        api_keys: vec![(
            "pjlfmn339fgh".into(),
            "fw4y9fjjd5tqjlsk3u9zkjjr154xbftc".into(),
        )],
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let send = |sig: &'static str| {
        let url = format!("{}/rest/tickets/search.json?show_meta=0", sim.base_url());
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .header("Cerb-Auth", format!("pjlfmn339fgh:{sig}"))
                .header("Date", "Wed, 08 Feb 2017 19:53:35 GMT")
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("expand=custom_&q=status%3Ao")
                .send()
                .await
                .expect("request");
            (r.status().as_u16(), r.text().await.expect("body"))
        }
    };
    // Authenticated; the records endpoint does not implement POST search (HTTP 200 error).
    let (s, body) = send("0cfe2f3b06552c060c8e77f7a0c875ee").await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("ERROR_NOT_IMPLEMENTED"), "{body}");
    let (s, _) = send("0cfe2f3b06552c060c8e77f7a0c875ef").await;
    assert_eq!(s, 401);
}

/// Cerb signs the path as requested (`REQUEST_URI`), `/index.php` prefix included.
#[tokio::test]
async fn signatures_cover_the_index_php_prefix() {
    let sim = sim(3600).await;
    let date = highwater::sim::faults::http_date(NOW);
    let q = "q=sort%3Aid&limit=2";
    let path = format!("/index.php{PATH}");
    let send = |signed_path: String| {
        let url = format!("{}{path}?{q}", sim.base_url());
        let date = date.clone();
        async move {
            let sig =
                highwater::sim::auth::signature("GET", &date, &signed_path, q, b"", "sim-secret");
            reqwest::Client::new()
                .get(url)
                .header("Cerb-Auth", format!("sim-key:{sig}"))
                .header("Date", date)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };
    assert_eq!(send(path.clone()).await, 200);
    assert_eq!(
        send(PATH.to_string()).await,
        401,
        "the prefix is part of what is signed"
    );
}

/// The token endpoint counts its requests and the simulator remembers every pair it issued.
#[tokio::test]
async fn token_requests_and_issued_pairs_are_observable() {
    let sim = sim(3600).await;
    let first = sim.mint_oauth_tokens();
    assert_eq!(sim.token_requests(), 0, "minting is not a request");
    let (status, _, _) = token_request(
        &sim,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &first.refresh_token),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = token_request(&sim, &[("grant_type", "password")]).await;
    assert_eq!(status, 400);
    assert_eq!(sim.token_requests(), 2);
    let issued = sim.issued_tokens();
    assert_eq!(issued.len(), 2);
    assert_eq!(issued[0], first);
    assert_ne!(issued[1].refresh_token, first.refresh_token);
}
