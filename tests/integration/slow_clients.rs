use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::api::expect_problem;
use crate::support::app::{spawn_app_with, TestApp};
use crate::support::spec::live_drop;

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.base.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connects")
}

/// Everything the server sends until it closes the connection (or 10 s pass).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_fed_a_byte_at_a_time_gets_408_and_the_connection_closes() {
    let app = spawn_app_with(|s| s.request_limits.timeout = Duration::from_secs(1)).await;
    app.create_drop(&live_drop("slow", 5, 1)).await;
    let token = app.token("slowpoke");
    let mut stream = connect(&app).await;
    let head = format!(
        "POST /v1/drops/slow/holds HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Idempotency-Key: k\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head sent");
    let started = Instant::now();
    let feeder = async {
        for _ in 0..40 {
            if stream.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), feeder).await;
    let answer = read_until_closed(&mut stream).await;
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("application/problem+json") && answer.contains("request-timeout"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    assert_eq!(app.available("slow", "S1").await, 5, "nothing written");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_never_ends_gets_408() {
    let app = spawn_app_with(|s| s.request_limits.timeout = Duration::from_secs(1)).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .expect("part of a head");
    let started = Instant::now();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_kib_header_gets_431() {
    let app = spawn_app_with(|_| {}).await;
    let res = app
        .client
        .get(app.url("/v1/drops"))
        .header("X-Padding", "x".repeat(64 * 1024))
        .send()
        .await
        .expect("sent");
    expect_problem(res, 431, "header-too-large").await;
    let fine = app
        .client
        .get(app.url("/v1/drops"))
        .send()
        .await
        .expect("sent");
    assert_eq!(fine.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_stream_from_one_address_is_refused_while_another_address_subscribes() {
    let app = spawn_app_with(|s| s.admission.enabled = true).await;
    app.create_drop(&live_drop("watched", 5, 1)).await;
    let open = |client: reqwest::Client| {
        let url = app.url("/v1/drops/watched/events");
        async move { client.get(url).send().await.expect("sent") }
    };
    let here = reqwest::Client::new();
    let mut streams = Vec::new();
    for i in 0..4 {
        let res = open(here.clone()).await;
        assert_eq!(res.status(), 200, "stream {i}");
        streams.push(res);
    }
    let fifth = open(here.clone()).await;
    let problem = expect_problem(fifth, 429, "too-many-streams").await;
    assert!(problem["detail"].as_str().is_some());
    let there = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().expect("address"))
        .build()
        .expect("client");
    assert_eq!(
        open(there).await.status(),
        200,
        "another address is not held up"
    );
    // Closing one frees its place: the server notices when a message finds it gone.
    drop(streams.pop());
    let started = Instant::now();
    loop {
        app.api().adjust_stock("watched", "S1", 1).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let res = open(here.clone()).await;
        if res.status() == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}
