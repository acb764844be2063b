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

/// The error table of docs/design.md and the served OpenAPI document name the same codes, so a
/// client generated from the document knows every code it can get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_names_every_problem_code_the_design_lists() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get_json("/openapi.json").await;
    let served: std::collections::BTreeSet<String> = doc["components"]["schemas"]["Problem"]
        ["properties"]["code"]["enum"]
        .as_array()
        .expect("an enum of codes")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    let design = include_str!("../../docs/design.md");
    let table = design
        .split("### Errors")
        .nth(1)
        .expect("an Errors section");
    let listed: std::collections::BTreeSet<String> = table
        .lines()
        .skip_while(|l| !l.starts_with("| code |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1).map(|c| c.trim().to_owned()))
        .collect();
    assert!(listed.len() > 30, "{listed:?}");
    assert_eq!(
        listed.difference(&served).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "listed in the design, missing from the document"
    );
    assert_eq!(
        served.difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in the document, missing from the design"
    );
    app.stop().await;
}

/// The served document is valid OpenAPI 3.1, as an independent validator (PyPI
/// `openapi-spec-validator`, installed by `make test`) reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_is_valid_openapi() {
    let app = spawn_app().await;
    let doc = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("sent")
        .bytes()
        .await
        .expect("body");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, &doc).expect("written");
    let validator = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools-venv/bin/openapi-spec-validator");
    let out = std::process::Command::new(&validator)
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{} ({e}): run `make test-deps`", validator.display()));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    app.stop().await;
}
