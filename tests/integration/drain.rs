use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::api::{buyer_token, client};
use crate::support::db::open_db;
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::spec::live_spec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_readiness_fails_first_while_requests_succeed_for_the_grace_then_it_exits_clean()
{
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = create_admin_key(dir.path());
    let mut server = ServerProcess::start_with(dir.path(), &["--drain-grace", "2s"], &[]);
    let http = client();
    let api = server.api(&http).with_admin_key(&admin);
    api.create_drop(&live_spec("drain")).await;
    let ready = |http: reqwest::Client, base: String| async move {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    };
    assert_eq!(
        ready(http.clone(), server.base.clone()).await.ok(),
        Some(200)
    );
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let signalled = Instant::now();
    // Readiness turns at once...
    loop {
        if ready(http.clone(), server.base.clone()).await.ok() == Some(503) {
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_millis(500),
            "still ready"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...while buyers are still served through the grace.
    let mut acked = 0;
    while signalled.elapsed() < Duration::from_millis(1_500) {
        let buyer = server
            .api(&http)
            .with_token(&buyer_token(&format!("b{acked}")));
        let res = buyer.hold("drain", "S1", 1, "k").await;
        assert_eq!(res.status(), 201, "served during the grace");
        acked += 1;
    }
    assert!(acked > 10, "{acked} holds during the grace");
    let exit = server
        .exited_within(Duration::from_secs(10))
        .await
        .expect("it stops after the grace");
    assert!(exit.success(), "{exit}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "not before the grace ended"
    );
    let held: i64 = open_db(&dir.path().join("dropd.db"))
        .query_row(
            "SELECT COUNT(*) FROM holds WHERE drop_id = 'drain'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(held, acked, "every hold answered 201 is on disk");
}
