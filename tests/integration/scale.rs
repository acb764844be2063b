//! Sharded behind HAProxy (docs/scale-out/haproxy.cfg, as shipped): two leaders, each with a
//! follower of its replica, and the real HAProxy in front. Requests go where the drop, hold or
//! order they name lives; a stampede on both drops at once oversells neither.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::api::{client, Api};
use crate::support::litestream::file_url;
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::spec::live_spec;

/// Kills the proxy when the test ends, however it ends.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn host_port(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// The shipped configuration, on loopback, in front of these four servers.
fn start_proxy(map: &Path, leaders: [&str; 2], followers: [&str; 2]) -> (Proxy, String) {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/scale-out/haproxy.cfg");
    let listen = format!("127.0.0.1:{}", free_port());
    let child = Command::new("haproxy")
        .args(["-db", "-f", config])
        .env("DROPD_PROXY_LISTEN", &listen)
        .env("DROPD_LEADER_A", host_port(leaders[0]))
        .env("DROPD_LEADER_B", host_port(leaders[1]))
        .env("DROPD_FOLLOWER_A", host_port(followers[0]))
        .env("DROPD_FOLLOWER_B", host_port(followers[1]))
        .env("DROPD_DROPS_MAP", map)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy runs (Debian package haproxy; make test-deps installs it)");
    let proxy = Proxy(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            Instant::now() < deadline,
            "haproxy never listened on {listen}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (proxy, format!("http://{listen}"))
}

fn backend(res: &reqwest::Response) -> String {
    res.headers()
        .get("x-dropd-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn scarce(id: &str, stock: i64) -> Value {
    let mut spec = live_spec(id);
    spec["skus"][0]["stock"] = json!(stock);
    spec["per_buyer_limit"] = json!(1);
    spec
}

/// Polls `GET path` through the proxy until a follower answers 200.
async fn until_followed(http: &reqwest::Client, base: &str, path: &str, follower: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let res = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("sent");
        if res.status() == 200 {
            assert_eq!(backend(&res), follower, "{path} is read from the follower");
            return res.json().await.expect("json");
        }
        assert!(
            Instant::now() < deadline,
            "{path} never served: {}",
            res.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_routes_by_drop_hold_and_order_and_nothing_is_oversold_across_two_leaders() {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = client();
    let mut leaders = Vec::new();
    let mut followers = Vec::new();
    for name in ["a", "b"] {
        let data = dir.path().join(format!("leader-{name}"));
        let url = file_url(&dir.path().join(format!("replica-{name}")));
        let leader = ServerProcess::start_with(
            &data,
            &[
                "--box-id",
                name,
                "--replica",
                &url,
                "--sync-interval",
                "200ms",
            ],
            &[],
        );
        let admin = leader.api(&http).with_admin_key(&create_admin_key(&data));
        admin
            .create_drop(&scarce(&format!("drop-{name}"), 50))
            .await;
        // The follower restores what the leader has shipped: wait for the drop to be there.
        let deadline = Instant::now() + Duration::from_secs(15);
        while admin.readyz_replica().await["pending_wal_bytes"] != 0
            || admin.readyz_replica().await["state"] != "ok"
        {
            assert!(Instant::now() < deadline, "leader {name} never shipped");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let follower = ServerProcess::start_with(
            &dir.path().join(format!("follower-{name}")),
            &["--follow", &url, "--follow-interval", "200ms"],
            &[],
        );
        leaders.push(leader);
        followers.push(follower);
    }
    let map = dir.path().join("drops.map");
    std::fs::write(&map, "drop-a a\ndrop-b b\n").expect("map");
    let (_proxy, base) = start_proxy(
        &map,
        [&leaders[0].base, &leaders[1].base],
        [&followers[0].base, &followers[1].base],
    );

    // A drop's page data and live stock come from its box's follower.
    for name in ["a", "b"] {
        let view = until_followed(
            &http,
            &base,
            &format!("/v1/drops/drop-{name}"),
            &format!("follower_{name}"),
        )
        .await;
        assert_eq!(view["id"], format!("drop-{name}"));
        let res = http
            .get(format!("{base}/v1/drops/drop-{name}/events"))
            .send()
            .await
            .expect("sent");
        assert_eq!(backend(&res), format!("follower_{name}"));
    }

    // A stampede on both drops at once, through the proxy: 120 buyers on each 50-unit drop.
    let proxy = Api::new(&http, &base);
    let attempts = (0..240).map(|i| {
        let proxy = proxy.clone();
        async move {
            let name = if i % 2 == 0 { "a" } else { "b" };
            let res = proxy
                .buyer(&format!("buyer-{i}"))
                .hold(&format!("drop-{name}"), "S1", 1, &format!("k{i}"))
                .await;
            let served = backend(&res);
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            (name, i, status, served, body)
        }
    });
    let answers = futures::future::join_all(attempts).await;
    let mut holds = Vec::new();
    for name in ["a", "b"] {
        let mine: Vec<_> = answers.iter().filter(|a| a.0 == name).collect();
        let held: Vec<_> = mine.iter().filter(|a| a.2 == 201).collect();
        assert_eq!(held.len(), 50, "drop-{name}: exactly its stock is held");
        assert!(
            mine.iter().all(|a| a.2 == 201 || a.2 == 409),
            "every other attempt is sold out"
        );
        assert!(
            mine.iter().all(|a| a.3 == format!("leader_{name}")),
            "writes go to leader {name}"
        );
        for a in &held {
            let id = a.4["hold_id"].as_str().expect("hold id");
            assert!(id.starts_with(&format!("hld_{name}_")), "{id}");
        }
        holds.push((
            held[0].1,
            held[0].4["hold_id"].as_str().expect("id").to_owned(),
        ));
        assert_eq!(
            leaders[if name == "a" { 0 } else { 1 }]
                .api(&http)
                .available(&format!("drop-{name}"), "S1")
                .await,
            0
        );
    }

    // Holds and orders find their way back to the box that made them.
    for (i, hold_id) in &holds {
        let buyer = proxy.buyer(&format!("buyer-{i}"));
        let res = buyer.get_hold(hold_id).await;
        assert_eq!(res.status(), 200);
        let name = &hold_id[4..5];
        assert_eq!(backend(&res), format!("leader_{name}"));
        let res = buyer.confirm(hold_id, &format!("pay-{i}")).await;
        assert_eq!(res.status(), 201);
        let order: Value = res.json().await.expect("order");
        let order_id = order["order_id"].as_str().expect("order id");
        assert!(order_id.starts_with(&format!("ord_{name}_")), "{order_id}");
        let res = buyer.get_order(order_id).await;
        assert_eq!(res.status(), 200);
        assert_eq!(backend(&res), format!("leader_{name}"));
    }

    // The followers catch up: both drops read sold out through the proxy.
    for name in ["a", "b"] {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let view = until_followed(
                &http,
                &base,
                &format!("/v1/drops/drop-{name}"),
                &format!("follower_{name}"),
            )
            .await;
            if view["skus"][0]["available"] == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "follower {name} never showed the sell-out"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for server in followers.into_iter().chain(leaders) {
        server.terminate();
    }
}
