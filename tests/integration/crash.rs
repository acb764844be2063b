//! Kills the real binary mid-stampede and checks that every acknowledged hold survived.

use std::time::{Duration, Instant};

use crate::support::api::client;
use crate::support::buyers::{stampede_until, verify_survived};
use crate::support::db::open_db;
use crate::support::process::{create_admin_key, ServerProcess};
use crate::support::spec::live_spec;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_hold_survives_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_key = create_admin_key(dir.path());
    let server = ServerProcess::start(dir.path());
    let http = client();
    let api = server.api(&http);
    api.with_admin_key(&admin_key)
        .create_drop(&live_spec("crash"))
        .await;
    let acked = stampede_until(&api, "crash", 0, |acked| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().expect("lock").holds.len() < 400 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.kill();
    })
    .await;
    assert!(
        acked.holds.len() >= 400,
        "the stampede ran before the kill ({} acked)",
        acked.holds.len()
    );

    let server = ServerProcess::start(dir.path());
    verify_survived(&server.api(&http), dir.path(), &acked).await;
    server.kill();
}

/// Ten cycles of stampede, SIGKILL at a random moment, restart: nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_loop_loses_no_acknowledged_hold_or_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_key = create_admin_key(dir.path());
    let http = client();
    let mut total_holds = 0;
    for cycle in 0..10 {
        let server = ServerProcess::start(dir.path());
        let api = server.api(&http);
        if cycle == 0 {
            api.with_admin_key(&admin_key)
                .create_drop(&live_spec("loop"))
                .await;
        }
        let after = Duration::from_millis(rand::random_range(20..400));
        let acked = stampede_until(&api, "loop", cycle, |_| async move {
            tokio::time::sleep(after).await;
            server.kill();
        })
        .await;
        total_holds += acked.holds.len();

        let server = ServerProcess::start(dir.path());
        verify_survived(&server.api(&http), dir.path(), &acked).await;
        server.kill();
        let stored: i64 = open_db(&dir.path().join("dropd.db"))
            .query_row("SELECT COUNT(*) FROM holds", [], |r| r.get(0))
            .expect("count");
        assert!(
            stored as usize >= total_holds,
            "cycle {cycle}: {stored} holds stored, {total_holds} acknowledged"
        );
    }
    assert!(total_holds > 0, "the loop acknowledged some holds");
}
