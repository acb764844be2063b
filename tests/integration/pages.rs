use crate::support::app::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cannot_be_framed_and_send_no_referrer() {
    let app = spawn_app().await;
    for path in ["/", "/admin", "/assets/app.js"] {
        let res = app.client.get(app.url(path)).send().await.expect("sent");
        assert_eq!(res.status(), 200, "{path}");
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            header("content-security-policy").contains("frame-ancestors 'none'"),
            "{path}: {}",
            header("content-security-policy")
        );
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
    }
    app.stop().await;
}
