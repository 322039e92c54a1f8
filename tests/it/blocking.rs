//! No blocking work on the runtime: a pair's leader reloading a policy with a 100,000-address
//! list, again and again and several at once, keeps its lead (its heartbeat runs on the same
//! runtime and must confirm the lead every 2 s) and goes on deciding.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::pair::{KEY, items, one_leader, spawn_member, stats, wait_decided};
use crate::pg::Pg;
use crate::support::*;

/// The pair's policy (`pair::policy`) with a list of 100,000 EVM addresses the treasury rule
/// also approves.
fn big_policy() -> String {
    let mut t = String::from("default = \"hold\"\n[lists]\nbig = [\n");
    for i in 0..100_000u32 {
        writeln!(t, "  \"0x{:040x}\",", u128::from(i) * 7919).unwrap();
    }
    t.push_str("]\n");
    write!(
        t,
        "[[rule]]\nname = \"treasury\"\naction = \"approve\"\nto = [\"{TREASURY}\", \"@big\"]\n\
         [[rule]]\nname = \"blocked\"\naction = \"reject\"\nto = [\"{BAD}\"]\n"
    )
    .unwrap();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_reloading_a_100000_address_policy_four_at_a_time_keeps_its_lead_and_decides_on() {
    let Some(pg) = Pg::start() else { return };
    pg.create_db("reload").await;
    let url = pg.url("reload", "disable");
    let sandbox = spawn_sandbox(&[]);
    post_pending(&sandbox.url, items(1, 4)).await;
    let a = spawn_member("a", &sandbox.url, &url, &pg, &[]);
    let b = spawn_member("b", &sandbox.url, &url, &pg, &[]);
    let (first, epoch) = one_leader(&[&a, &b]).await;
    let (leader, standby) = if first == 0 { (&a, &b) } else { (&b, &a) };
    wait_decided(&sandbox.url, 4, &[leader, standby]).await;
    std::fs::write(leader.dir.path().join("policy.toml"), big_policy()).unwrap();

    // Reloads four at a time (twice the cores) for 15 s: a reload that parsed the file on the
    // runtime's threads would leave none for the heartbeat, and the standby would take over.
    let client = reqwest::Client::new();
    let reload = || {
        client
            .post(format!("{}/v1/policy/reload", leader.base))
            .basic_auth(KEY, Some(""))
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(120))
            .send()
    };
    let started = Instant::now();
    let mut reloads = 0;
    let mut next = 5;
    while started.elapsed() < Duration::from_secs(15) {
        post_pending(&sandbox.url, items(next, next + 1)).await;
        next += 2;
        let answers = futures_util::future::join_all((0..4).map(|_| reload())).await;
        for answer in answers {
            let answer = answer.expect("the reload is answered");
            assert_eq!(answer.status().as_u16(), 200, "{:?}", answer.text().await);
            reloads += 1;
        }
    }
    let (status, body) = leader.call(reqwest::Method::GET, "/v1/policy").await;
    assert_eq!(status, 200, "{body}");
    assert!(reloads >= 4, "{reloads}");

    // Still the leader at the same epoch, never stood down, and everything posted decided.
    assert_eq!(leader.leadership().await, Some((1, epoch)));
    assert_eq!(standby.leadership().await, Some((0, 0)));
    let admin = pg.admin("reload").await;
    let in_db: i64 = admin
        .query_one("SELECT epoch FROM cosigner_leader WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_db, epoch, "the lead changed hands");
    assert!(!leader.log().contains("lead lost"), "{}", leader.log());
    wait_decided(
        &sandbox.url,
        usize::try_from(next - 1).unwrap(),
        &[leader, standby],
    )
    .await;
    assert_eq!(stats(&sandbox.url).await["conflicts"], 0);
}
