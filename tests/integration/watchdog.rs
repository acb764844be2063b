use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::api::client;
use crate::support::app::spawn_app_with;
use crate::support::process::ServerProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_writer_stops_the_watchdog_pings_and_readiness_says_why() {
    let app = spawn_app_with(|s| s.writer_stuck_after = Duration::from_millis(300)).await;
    let pings = Arc::new(AtomicU64::new(0));
    {
        let pings = pings.clone();
        app.handle()
            .feed_watchdog(Duration::from_millis(50), move || {
                pings.fetch_add(1, Ordering::Relaxed);
            });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        pings.load(Ordering::Relaxed) >= 3,
        "fed while the writer turns"
    );
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );

    let writer = app.writer.clone();
    let stall = tokio::spawn(async move { writer.stall_for_tests(Duration::from_secs(2)).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let res = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 503);
    let problem: serde_json::Value = res.json().await.expect("problem");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("stuck")),
        "{problem}"
    );
    let before = pings.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        pings.load(Ordering::Relaxed),
        before,
        "no ping while the writer is stuck"
    );

    stall.await.expect("joined").expect("stall answered");
    let started = Instant::now();
    while app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("sent")
        .status()
        != 200
    {
        assert!(started.elapsed() < Duration::from_secs(5), "ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        pings.load(Ordering::Relaxed) > before,
        "fed again once it turns"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_server_says_ready_then_feeds_the_watchdog() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let server = ServerProcess::start_with(
        &dir.path().join("data"),
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8")),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while seen
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 2
    {
        let n = socket.recv(&mut buf).expect("a message from the server");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(seen[0].contains("READY=1"), "{seen:?}");
    let http = client();
    assert_eq!(
        http.get(format!("{}/readyz", server.base))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    server.terminate();
}
