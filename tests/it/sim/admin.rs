//! The `/_sim/` admin endpoints and the in-process mutation controls, and `simulate --help`.

use clap::Args;
use highwater::sim::cli::SimulateArgs;
use highwater::sim::{Clock, Sim, SimConfig};
use serde_json::{Value, json};

use super::search;

const NOW: i64 = 1_800_000_000;

async fn sim() -> Sim {
    Sim::start(SimConfig {
        records: 200,
        clock: Clock::Fixed(NOW),
        ..SimConfig::default()
    })
    .await
    .expect("sim")
}

async fn admin(sim: &Sim, route: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/{route}", sim.base_url()))
        .json(&body)
        .send()
        .await
        .expect("admin request");
    assert_eq!(r.status().as_u16(), 200, "{route}");
    r.json().await.expect("json")
}

#[tokio::test]
async fn create_update_and_bulk_update() {
    let sim = sim().await;
    let max = sim
        .records("ticket")
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .max()
        .expect("rows");
    let id = admin(
        &sim,
        "create",
        json!({"type":"ticket","fields":{"subject":"Neu 🎉"}}),
    )
    .await["id"]
        .as_i64()
        .expect("id");
    assert_eq!(id, max + 1);
    let t = sim.get("ticket", id).expect("created");
    assert_eq!(
        (t["subject"].clone(), t["updated"].clone()),
        (json!("Neu 🎉"), json!(NOW))
    );

    sim.set_clock(Clock::Fixed(NOW + 10));
    let first = sim.records("ticket")[0]["id"].as_i64().expect("id");
    let old = sim.get("ticket", first).expect("row")["updated"].clone();
    admin(
        &sim,
        "update",
        json!({"type":"ticket","id":first,"fields":{"importance":7}}),
    )
    .await;
    let t = sim.get("ticket", first).expect("row");
    assert_eq!(
        (t["importance"].clone(), t["updated"].clone()),
        (json!(7), old),
        "no bump"
    );
    admin(
        &sim,
        "update",
        json!({"type":"ticket","id":first,"fields":{"importance":8},"bump":true}),
    )
    .await;
    assert_eq!(
        sim.get("ticket", first).expect("row")["updated"],
        NOW + 10,
        "bump"
    );

    let ids: Vec<i64> = sim
        .records("ticket")
        .iter()
        .skip(1)
        .take(120)
        .map(|r| r["id"].as_i64().expect("id"))
        .collect();
    let v = admin(
        &sim,
        "bulk-update",
        json!({"type":"ticket","ids":ids,"fields":{"status":"closed"}}),
    )
    .await;
    assert_eq!(v["updated"], NOW + 10);
    let r = search(
        &sim,
        "ticket",
        &format!(r#"updated:"{0} to {0}""#, NOW + 10),
        &[],
    )
    .await
    .json();
    assert_eq!(
        r["total"], 121,
        "120 bulk rows plus the bumped row share one second"
    );
    assert_eq!(
        sim.get("ticket", ids[5]).expect("row")["status_id"],
        2,
        "status_id follows status"
    );
}

#[tokio::test]
async fn deletes_purges_merges_and_late_writes() {
    let sim = sim().await;
    let rows = sim.records("ticket");
    let (a, b) = (rows[0].clone(), rows[1].clone());
    let (ida, idb) = (a["id"].as_i64().expect("id"), b["id"].as_i64().expect("id"));

    admin(&sim, "soft-delete", json!({"type":"ticket","id":ida})).await;
    let t = sim.get("ticket", ida).expect("soft-deleted row remains");
    assert_eq!(
        (
            t["status"].clone(),
            t["status_id"].clone(),
            t["updated"].clone()
        ),
        (json!("deleted"), json!(3), a["updated"].clone())
    );

    let task = sim.records("task")[0]["id"]
        .as_str()
        .expect("string id")
        .parse::<i64>()
        .expect("num");
    admin(&sim, "soft-delete", json!({"type":"task","id":task})).await;
    assert!(sim.get("task", task).is_none(), "other types are removed");

    let idc = rows[2]["id"].as_i64().expect("id");
    assert_eq!(
        admin(&sim, "purge", json!({"type":"ticket","id":idc})).await["ok"],
        true
    );
    assert!(sim.get("ticket", idc).is_none());

    let v = admin(
        &sim,
        "merge",
        json!({"type":"ticket","from":ida,"into":idb}),
    )
    .await;
    assert_eq!(v["ok"], true);
    assert!(sim.get("ticket", ida).is_none());
    let merged = sim.get("ticket", idb).expect("into");
    assert_eq!(
        merged["num_messages"],
        a["num_messages"].as_i64().expect("n") + b["num_messages"].as_i64().expect("n")
    );
    assert_eq!(
        merged["updated"], b["updated"],
        "merge does not bump updated"
    );

    let max = sim
        .records("ticket")
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .max()
        .expect("rows");
    let late_second = b["updated"].as_i64().expect("u");
    let id = admin(
        &sim,
        "late-write",
        json!({"type":"ticket","updated":late_second,"fields":{"subject":"late"}}),
    )
    .await["id"]
        .as_i64()
        .expect("id");
    assert!(id > 0 && id < max, "late id {id} below max {max}");
    let t = sim.get("ticket", id).expect("late row");
    assert_eq!(
        (t["updated"].clone(), t["subject"].clone()),
        (json!(late_second), json!("late"))
    );
    // A cursor already past (late_second, max) never sees it; an id scan does.
    let q = format!(
        r#"(updated:"{} to {NOW}" OR (updated:"{late_second} to {late_second}" id:>{max})) sort:updated,id"#,
        late_second + 1
    );
    assert!(
        !search(&sim, "ticket", &q, &[("limit", "500")])
            .await
            .ids()
            .contains(&id)
    );
    assert!(
        search(&sim, "ticket", "id:>0 sort:id", &[("limit", "500")])
            .await
            .ids()
            .contains(&id)
    );
}

#[tokio::test]
async fn faults_clock_ignore_switches_stats_and_mint() {
    let sim = sim().await;
    admin(
        &sim,
        "faults",
        json!({"push":["429:seconds=3","502","query_timeout"]}),
    )
    .await;
    assert_eq!(search(&sim, "ticket", "", &[]).await.status, 429);
    assert_eq!(search(&sim, "ticket", "", &[]).await.status, 502);
    assert_eq!(search(&sim, "ticket", "", &[]).await.json()["total"], -1);
    assert_eq!(search(&sim, "ticket", "", &[]).await.status, 200);
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/faults", sim.base_url()))
        .json(&json!({"push":["418"]}))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status().as_u16(), 400, "unknown fault rejected");

    assert_eq!(
        admin(&sim, "clock", json!({"fixed": 1234})).await["now"],
        1234
    );
    assert_eq!(sim.now(), 1234);
    let now = admin(&sim, "clock", json!({"offset": -3600})).await["now"]
        .as_i64()
        .expect("now");
    assert!((now - (Clock::Real.now() - 3600)).abs() <= 2);
    admin(&sim, "clock", json!({"fixed": NOW})).await;

    admin(&sim, "ignore-keyset", json!({"on":true})).await;
    assert_eq!(
        search(&sim, "ticket", "id:<0 sort:id", &[]).await.json()["total"],
        200,
        "filters ignored"
    );
    admin(&sim, "ignore-keyset", json!({"on":false})).await;
    assert_eq!(
        search(&sim, "ticket", "id:<0 sort:id", &[]).await.json()["total"],
        0
    );

    admin(&sim, "ignore-sort", json!({"on":true})).await;
    let ids = search(&sim, "ticket", "sort:id", &[("limit", "50")])
        .await
        .ids();
    assert!(!ids.windows(2).all(|w| w[0] < w[1]), "scrambled");
    admin(&sim, "ignore-sort", json!({"on":false})).await;
    let ids = search(&sim, "ticket", "sort:id", &[("limit", "50")])
        .await
        .ids();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));

    let stats: Value = reqwest::get(format!("{}/_sim/stats", sim.base_url()))
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["requests"], sim.request_count());
    assert_eq!(stats["requests"], 8, "eight searches were sent");

    let p = admin(&sim, "oauth-mint", json!({})).await;
    let tok = p["access_token"].as_str().expect("token");
    let r = super::get(&sim, "/rest/records/ticket/search.json", &[], Some(tok)).await;
    assert_eq!(r.status, 200);
}

#[test]
fn simulate_help_documents_the_admin_endpoints() {
    let help = SimulateArgs::augment_args(clap::Command::new("simulate"))
        .render_long_help()
        .to_string();
    for route in [
        "--port",
        "--records",
        "--seed",
        "--token",
        "--fault-rate",
        "--clock-offset",
        "/_sim/create",
        "/_sim/update",
        "bump",
        "/_sim/bulk-update",
        "/_sim/soft-delete",
        "/_sim/purge",
        "/_sim/merge",
        "/_sim/late-write",
        "/_sim/faults",
        "/_sim/clock",
        "/_sim/ignore-keyset",
    ] {
        assert!(help.contains(route), "help lacks {route}");
    }
}
