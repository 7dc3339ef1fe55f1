//! The query-semantics table of DESIGN.md §3 / CERB_API.md §4: each working and each silently wrong
//! form answers what Cerb answers.

use highwater::sim::{Clock, Sim, SimConfig};
use serde_json::json;

use super::{empty_sim, search, ticket};

const NOW: i64 = 5000;

/// Tickets 1..=10 at second 100, 11..=20 at 200, 21 in the future (6000), 22 at 0.
async fn table_sim() -> Sim {
    let sim = empty_sim(NOW).await;
    for id in 1..=10 {
        ticket(&sim, id, 100);
    }
    for id in 11..=20 {
        ticket(&sim, id, 200);
    }
    ticket(&sim, 21, 6000);
    ticket(&sim, 22, 0);
    sim
}

fn range(a: i64, b: i64) -> Vec<i64> {
    (a..=b).collect()
}

#[tokio::test]
async fn query_semantics_table() {
    let sim = table_sim().await;
    let all_but_future: Vec<i64> = range(1, 20).into_iter().chain([22]).collect();
    let cases: Vec<(&str, Vec<i64>)> = vec![
        // Working forms.
        (r#"updated:"100 to 100""#, range(1, 10)),
        (r#"updated:"100 to 200""#, range(1, 20)),
        (r#"updated:(since:100 until:100)"#, range(1, 10)),
        (r#"updated:"@200 to @200""#, range(11, 20)),
        (r#"updated:"100 to 4294967295""#, range(1, 21)),
        (r#"updated:"100 to 100" id:>5"#, range(6, 10)),
        (r#"updated:"100 to 100" AND id:>5"#, range(6, 10)),
        (
            r#"(updated:"200 to 200" OR (updated:"100 to 100" id:>5))"#,
            range(6, 20),
        ),
        ("id:>15", range(16, 22)),
        ("id:>=15", range(15, 22)),
        ("id:<3", vec![1, 2]),
        ("id:<=2", vec![1, 2]),
        ("id:5...7", vec![5, 6, 7]),
        (r#"id:"5 to 7""#, vec![5, 6, 7]),
        ("id:[1,3]", vec![1, 3]),
        ("id:7", vec![7]),
        ("id:!1 id:<4", vec![2, 3]),
        ("id:![1,3] id:<5", vec![2, 4]),
        ("!(id:>2)", vec![1, 2]),
        // Silently wrong forms: Cerb answers success with these results.
        ("updated:100", range(1, 20)), // bare value = 100..now (future row dropped)
        ("updated:>200", all_but_future.clone()), // `>` fails to parse: 0..now, NULL included
        ("updated:>=200", all_but_future.clone()),
        ("updated:=200", all_but_future.clone()),
        ("updated:<100", all_but_future.clone()),
        ("updated:0", vec![22]), // `0`/`never` mean "= 0"
        ("updated:never", vec![22]),
        (r#"updated:"200 to 200" OR id:1"#, vec![]), // top-level OR without parentheses
        (r#"updated:"200 to 200" OR (id:1) sort:updated,id"#, vec![]),
        ("nosuchfield:1", vec![]),                 // unknown filter
        (r#"(updated:"1 to 2" OR id:>5"#, vec![]), // unbalanced parenthesis
        ("id:>5 (id:<9 limit:2)", vec![]),         // pseudo-filter inside a group
        ("id:{{ 5 }}", vec![]),                    // template markup
        ("", range(1, 22)),                        // no filter, no implicit filter
    ];
    for (q, want) in cases {
        let r = search(&sim, "ticket", &format!("{q} sort:id"), &[("limit", "500")]).await;
        let q_only = search(&sim, "ticket", q, &[("limit", "500")]).await;
        let body = q_only.json();
        assert_eq!(body["__status"], "success", "{q}");
        let mut got = q_only.ids();
        got.sort_unstable();
        assert_eq!(got, want, "q={q}");
        assert_eq!(body["total"], json!(want.len()), "total of q={q}");
        if !q.contains(" OR ") || q.starts_with('(') {
            assert_eq!(r.ids(), want, "sorted q={q} sort:id");
        }
    }
}

#[tokio::test]
async fn status_filter_and_sorting() {
    let sim = table_sim().await;
    let mut f = serde_json::Map::new();
    f.insert("status".into(), json!("closed"));
    assert!(sim.update("ticket", 3, f.clone(), false));
    assert!(sim.update("ticket", 4, f, false));
    assert!(sim.soft_delete("ticket", 5));
    assert_eq!(
        search(&sim, "ticket", "status:c sort:id", &[]).await.ids(),
        vec![3, 4]
    );
    assert_eq!(search(&sim, "ticket", "status:d", &[]).await.ids(), vec![5]);
    assert_eq!(
        search(&sim, "ticket", "status:[c,d] sort:-id", &[])
            .await
            .ids(),
        vec![5, 4, 3]
    );
    assert_eq!(
        search(&sim, "ticket", "status:!o sort:id", &[]).await.ids(),
        vec![3, 4, 5]
    );
    // Several keys with `-`; unknown keys dropped silently.
    let r = search(&sim, "ticket", "id:<8 sort:-updated,importance,-id", &[]).await;
    let mut want: Vec<(i64, i64, i64)> = (1..8).map(|i| (-100, i % 7, -i)).collect();
    want.sort();
    assert_eq!(r.ids(), want.iter().map(|w| -w.2).collect::<Vec<_>>());
    assert_eq!(
        search(&sim, "ticket", "id:<4 sort:nosuch,-id", &[])
            .await
            .ids(),
        vec![3, 2, 1]
    );
    // No sort: primary-key order.
    assert_eq!(
        search(&sim, "ticket", "id:<4 sort:nosuch", &[]).await.ids(),
        vec![1, 2, 3]
    );
    assert_eq!(
        search(&sim, "ticket", "id:>19 sort:-id", &[]).await.ids(),
        vec![22, 21, 20]
    );
}

#[tokio::test]
async fn limits_pages_and_the_page_beyond_end_quirk() {
    let sim = table_sim().await;
    let r = search(&sim, "ticket", "sort:id", &[]).await.json();
    assert_eq!(
        (r["count"].clone(), r["limit"].clone(), r["page"].clone()),
        (json!(10), json!(10), json!(1)),
        "defaults"
    );
    let r = search(&sim, "ticket", "sort:id limit:3", &[("limit", "50")])
        .await
        .json();
    assert_eq!(
        (r["count"].clone(), r["limit"].clone()),
        (json!(3), json!(50)),
        "q limit wins, param echoed"
    );
    let r = search(&sim, "ticket", "sort:id", &[("limit", "0")])
        .await
        .json();
    assert_eq!(
        (r["count"].clone(), r["limit"].clone()),
        (json!(1), json!(1))
    );
    let r = search(&sim, "ticket", "sort:id", &[("limit", "abc")])
        .await
        .json();
    assert_eq!(r["limit"], 1, "non-numeric limit becomes 1");
    let r = search(&sim, "ticket", "sort:id limit:0", &[]).await.json();
    assert_eq!(r["count"], 1, "limit:0 clamps to 1");
    let r = search(&sim, "ticket", "sort:id", &[("limit", "5"), ("page", "0")]).await;
    assert_eq!(
        (r.json()["page"].clone(), r.ids()),
        (json!(0), range(1, 5)),
        "page=0 is the first page, echoed raw"
    );
    let r = search(&sim, "ticket", "sort:id page:2", &[("limit", "5")]).await;
    assert_eq!(
        (r.json()["page"].clone(), r.ids()),
        (json!(1), range(6, 10)),
        "page: in q wins"
    );
    let r = search(&sim, "ticket", "sort:id", &[("limit", "5"), ("page", "5")]).await;
    assert_eq!(
        r.ids(),
        vec![21, 22],
        "the last partial page is a real page"
    );
    // 22 rows, limit 5: pages past the end return page floor(22/5)-1 = index 3 (rows 16..20).
    for page in ["6", "7", "99"] {
        let r = search(&sim, "ticket", "sort:id", &[("limit", "5"), ("page", page)]).await;
        assert_eq!(r.ids(), range(16, 20), "page {page}");
        assert_eq!(r.json()["total"], 22);
    }
    // Exact multiple: 20 rows, limit 10, page 3 returns page 2 again with count == limit.
    let r = search(
        &sim,
        "ticket",
        "id:<=20 sort:id",
        &[("limit", "10"), ("page", "3")],
    )
    .await;
    assert_eq!(r.ids(), range(11, 20));
    // Empty result stays empty.
    let r = search(&sim, "ticket", "id:>100", &[("page", "3")])
        .await
        .json();
    assert_eq!(
        (r["count"].clone(), r["total"].clone()),
        (json!(0), json!(0))
    );
    let r = search(&sim, "ticket", "sort:id", &[("show_results", "0")])
        .await
        .json();
    assert_eq!(
        r,
        json!({"__build":2024030901,"__status":"success","__version":"10.4.10"})
    );
}

#[tokio::test]
async fn big_limits_clamp() {
    let sim = Sim::start(SimConfig {
        records: 600,
        clock: Clock::Fixed(2_000_000_000),
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let r = search(&sim, "ticket", "sort:updated,id limit:1000", &[])
        .await
        .json();
    assert_eq!(
        (r["count"].clone(), r["limit"].clone()),
        (json!(250), json!(10))
    );
    let r = search(&sim, "ticket", "sort:updated,id", &[("limit", "1000")])
        .await
        .json();
    assert_eq!(
        (r["count"].clone(), r["limit"].clone(), r["total"].clone()),
        (json!(500), json!(500), json!(600))
    );
    let r = search(
        &sim,
        "ticket",
        "sort:updated,id limit:1000",
        &[("limit", "1000")],
    )
    .await
    .json();
    assert_eq!(
        (r["count"].clone(), r["limit"].clone()),
        (json!(250), json!(500))
    );
}

#[tokio::test]
async fn other_types_filters_and_id_types() {
    let sim = Sim::start(SimConfig {
        records: 50,
        clock: Clock::Fixed(2_000_000_000),
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    // messages and comments have no `updated:` filter: unknown filter, 0 rows.
    for t in ["message", "comment"] {
        let r = search(&sim, t, r#"updated:"0 to 4294967295""#, &[])
            .await
            .json();
        assert_eq!(
            (r["__status"].clone(), r["total"].clone()),
            (json!("success"), json!(0)),
            "{t}"
        );
        let r = search(&sim, t, "id:>0 sort:id", &[("limit", "500")]).await;
        assert_eq!(r.json()["total"], 50, "{t} id cursor");
        assert!(
            r.json()["results"][0].get("updated").is_none(),
            "{t} has no updated"
        );
    }
    // contact: `updated:` filters `updated_at`, ids are strings ordered numerically.
    let contacts = sim.records("contact");
    let ts = contacts[0]["updated_at"].as_i64().expect("updated_at");
    let r = search(
        &sim,
        "contact",
        &format!(r#"updated:"{ts} to {ts}" sort:id"#),
        &[("limit", "500")],
    )
    .await;
    assert!(
        r.ids().contains(
            &contacts[0]["id"]
                .as_str()
                .expect("string id")
                .parse::<i64>()
                .expect("num")
        )
    );
    let ids = search(&sim, "contacts", "sort:id", &[("limit", "500")])
        .await
        .ids();
    assert!(ids.windows(2).all(|w| w[0] < w[1]) && ids.len() == 50);
    let tasks = search(
        &sim,
        "cerberusweb.contexts.task",
        "sort:-id",
        &[("limit", "3")],
    )
    .await
    .json();
    assert!(
        tasks["results"][0]["id"].is_string() && tasks["results"][0]["is_completed"].is_boolean()
    );
    let r = search(&sim, "nosuchrecord", "", &[]).await.json();
    assert_eq!(
        (r["__status"].clone(), r["__error"].clone()),
        (json!("error"), json!("ERROR_NOT_FOUND"))
    );
}

/// Walks every row with the working keyset query; `at_ties` rows share one second.
async fn keyset_walk(sim: &Sim, limit: usize, h: i64) -> Vec<i64> {
    let (mut t, mut i) = (0i64, 0i64);
    let mut seen = Vec::new();
    let lim = limit.to_string();
    for _ in 0..10_000 {
        let q = format!(
            r#"(updated:"{} to {h}" OR (updated:"{t} to {t}" id:>{i})) sort:updated,id"#,
            t + 1
        );
        let r = search(sim, "ticket", &q, &[("limit", &lim), ("page", "1")]).await;
        let body = r.json();
        let rows = body["results"].as_array().expect("results").clone();
        if rows.is_empty() {
            return seen;
        }
        for row in &rows {
            let key = (
                row["updated"].as_i64().expect("u"),
                row["id"].as_i64().expect("id"),
            );
            assert!(key > (t, i), "row {key:?} not after cursor {:?}", (t, i));
            t = key.0;
            i = key.1;
            seen.push(key.1);
        }
    }
    panic!("walk did not end");
}

#[tokio::test]
async fn keyset_walk_with_350_rows_in_one_second() {
    let sim = empty_sim(10_000).await;
    // 350 rows at second 5000 with scattered ids, 150 rows around it.
    let mut ids = Vec::new();
    for k in 0..500i64 {
        let id = k * 3 + 1;
        let updated = if k % 10 < 7 { 5000 } else { 4000 + k * 7 };
        ticket(&sim, id, updated);
        ids.push(id);
    }
    let tied = sim
        .records("ticket")
        .iter()
        .filter(|r| r["updated"] == 5000)
        .count();
    assert_eq!(tied, 350);
    for limit in [37, 100, 500] {
        let mut seen = keyset_walk(&sim, limit, 4_294_967_295).await;
        assert_eq!(seen.len(), 500, "limit {limit}: every row once");
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, ids, "limit {limit}: every row exactly once");
    }
    // The timestamp-only cursor (a wrong form) loses the tied rows after the first page.
    let r = search(
        &sim,
        "ticket",
        r#"updated:"5001 to 4294967295" sort:updated,id"#,
        &[("limit", "500")],
    )
    .await;
    assert!(r.ids().len() < 150);
}

#[tokio::test]
async fn keyset_walk_over_generated_data_sees_every_row() {
    let sim = Sim::start(SimConfig {
        records: 3000,
        clock: Clock::Fixed(2_000_000_000),
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let mut seen = keyset_walk(&sim, 500, 2_000_000_000).await;
    let mut all: Vec<i64> = sim
        .records("ticket")
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect();
    seen.sort_unstable();
    all.sort_unstable();
    assert_eq!(seen, all);
    // Generated rows lie in the past of the clock, with shared seconds.
    let max = sim
        .records("ticket")
        .iter()
        .map(|r| r["updated"].as_i64().expect("u"))
        .max()
        .expect("rows");
    assert!(max < 2_000_000_000);
}

#[tokio::test]
async fn relative_and_iso_dates() {
    let now = 1_705_314_600; // 2024-01-15T10:30:00Z
    let sim = empty_sim(now).await;
    ticket(&sim, 1, now - 3600); // 09:30 today
    ticket(&sim, 2, now - 86_400 + 60); // yesterday 10:31
    ticket(&sim, 3, now - 86_400 - 11 * 3600); // 2024-01-13 23:30
    let ids = |q: &'static str| {
        let sim = sim.clone();
        async move {
            let mut v = search(&sim, "ticket", q, &[]).await.ids();
            v.sort_unstable();
            v
        }
    };
    assert_eq!(
        ids(r#"updated:"-1 day""#).await,
        vec![1, 2],
        "day units snap to midnight"
    );
    assert_eq!(ids(r#"updated:"-24 hours""#).await, vec![1, 2]);
    assert_eq!(ids(r#"updated:"-2 hours""#).await, vec![1]);
    assert_eq!(
        ids(r#"updated:"2024-01-13 to 2024-01-13""#).await,
        vec![3],
        "date-only end is 23:59:59"
    );
    assert_eq!(
        ids(r#"updated:"2024-01-15T09:00:00Z to now""#).await,
        vec![1]
    );
    assert_eq!(ids("updated:today").await, vec![1]);
    assert_eq!(ids(r#"updated:"big bang to yesterday""#).await, vec![2, 3]);
}

#[tokio::test]
async fn keyset_query_with_an_extra_filter_counts_and_pages_exactly() {
    let sim = Sim::start(SimConfig {
        records: 2000,
        clock: Clock::Fixed(2_000_000_000),
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let rows = sim.records("ticket");
    let mut open: Vec<(i64, i64)> = rows
        .iter()
        .filter(|r| r["status_id"] == 0)
        .map(|r| {
            (
                r["updated"].as_i64().expect("u"),
                r["id"].as_i64().expect("id"),
            )
        })
        .collect();
    open.sort_unstable();
    let (t, i) = open[open.len() / 3];
    let q = format!(
        r#"(updated:"{} to 2000000000" OR (updated:"{t} to {t}" id:>{i})) status:o sort:updated,id"#,
        t + 1
    );
    let r = search(&sim, "ticket", &q, &[("limit", "100")]).await;
    let want: Vec<(i64, i64)> = open.iter().copied().filter(|k| *k > (t, i)).collect();
    assert_eq!(r.json()["total"], json!(want.len()));
    assert_eq!(
        r.ids(),
        want.iter().take(100).map(|k| k.1).collect::<Vec<_>>()
    );
    // A mutation is visible to the next search with the same filter.
    let mut f = serde_json::Map::new();
    f.insert("status".into(), json!("closed"));
    assert!(sim.update("ticket", want[0].1, f, false));
    let r = search(&sim, "ticket", &q, &[("limit", "100")]).await;
    assert_eq!(r.json()["total"], json!(want.len() - 1));
    assert_eq!(r.ids()[0], want[1].1);
}

#[tokio::test]
async fn custom_fields_and_content_only_with_expand() {
    let sim = Sim::start(SimConfig {
        records: 5,
        clock: Clock::Fixed(2_000_000_000),
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let plain = search(&sim, "ticket", "sort:id", &[]).await.json();
    assert!(
        plain["results"][0].get("custom").is_none()
            && plain["results"][0].get("custom_1").is_none()
    );
    let r = search(&sim, "ticket", "sort:id", &[("expand", "custom_")])
        .await
        .json();
    let row = &r["results"][0];
    assert!(row["custom_1"].is_string(), "custom values are strings");
    assert_eq!(row["custom"]["1"], row["custom_1"]);
    let m = search(&sim, "message", "sort:id", &[]).await.json();
    assert!(m["results"][0].get("content").is_none());
    let m = search(&sim, "message", "sort:id", &[("expand", "content")])
        .await
        .json();
    assert!(m["results"][0]["content"].is_string());
}
