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

/// Every kind of body the server sends, read from the real server, matches the schema the
/// document gives it: JSON answers, problems, the NDJSON export's lines, and the messages of
/// both event streams (each with its `data` parsed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_server_sends_is_what_its_document_describes() {
    use crate::support::sse::Events;
    use serde_json::{json, Value};

    let app = spawn_app().await;
    let doc: Value = app.get_json("/openapi.json").await;
    let mut seen: Vec<(String, Value)> = Vec::new();
    let created = app
        .create_drop(&crate::support::spec::live_drop("shape", 5, 3))
        .await;
    seen.push(("Drop".into(), created));
    let mut events = Events::open(&app, "shape", None).await;
    let buyer = app.buyer("shaper");
    let res = buyer.hold("shape", "S1", 1, "k1").await;
    assert_eq!(res.status(), 201);
    let hold: Value = res.json().await.expect("json");
    let hold_id = hold["hold_id"].as_str().expect("id").to_owned();
    seen.push(("Hold".into(), hold));
    let res = buyer.confirm(&hold_id, "k2").await;
    assert_eq!(res.status(), 201);
    seen.push(("Order".into(), res.json().await.expect("json")));
    seen.push((
        "Hold".into(),
        buyer.get_hold(&hold_id).await.json().await.expect("json"),
    ));
    seen.push(("OrderList".into(), buyer.orders().await));
    seen.push(("DropList".into(), app.get_json("/v1/drops").await));
    let res = app
        .patch_drop(
            "shape",
            json!({"name": "Renamed", "prices": [{"sku": "S1", "price": {"amount": 1, "currency": "EUR"}}]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    seen.push(("Drop".into(), res.json().await.expect("json")));
    let res = app.api().adjust_stock("shape", "S1", 2).await;
    assert_eq!(res.status(), 200);
    seen.push(("Drop".into(), res.json().await.expect("json")));
    let res = buyer.hold("shape", "S1", 3, "k3").await;
    assert_eq!(res.status(), 409);
    seen.push(("Problem".into(), res.json().await.expect("json")));
    seen.push(("Readiness".into(), app.get_json("/readyz").await));

    let mut names = std::collections::BTreeSet::new();
    while names.len() < 4 {
        let event = events.next().await.expect("stream open");
        names.insert(event.name.clone());
        let text = event.data.to_string();
        seen.push((
            "LiveEvent".into(),
            json!({"event": event.name, "id": event.id.expect("an id").to_string(), "data": text}),
        ));
        seen.push((payload_schema(&doc, "LiveEvent", &event.name), event.data));
    }
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["drop", "ledger", "snapshot", "stock"]
    );

    let export = app
        .client
        .get(app.url("/v1/admin/drops/shape/orders"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .expect("sent");
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let text = export.text().await.expect("body");
    for line in text.lines() {
        seen.push((
            "Order".into(),
            serde_json::from_str(line).expect("a JSON line"),
        ));
    }
    assert_eq!(text.lines().count(), 1);

    let mut feed = app
        .client
        .get(app.url("/v1/admin/events"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .expect("sent");
    let stats = crate::support::sse::first_data(&mut feed).await;
    seen.push((
        "OperatorEvent".into(),
        json!({"event": "stats", "data": stats.to_string()}),
    ));
    seen.push((payload_schema(&doc, "OperatorEvent", "stats"), stats));

    crate::support::contract::assert_matches(&doc, &seen);
    app.stop().await;
}

/// The schema an event's `data` text holds, as the document names it (`contentSchema`).
fn payload_schema(doc: &serde_json::Value, stream: &str, event: &str) -> String {
    let schema = &doc["components"]["schemas"][stream];
    let variants = match schema["oneOf"].as_array() {
        Some(items) => items.clone(),
        None => vec![schema.clone()],
    };
    let variant = variants
        .iter()
        .find(|v| v["properties"]["event"]["enum"][0] == event)
        .unwrap_or_else(|| panic!("{stream} documents no {event} event"));
    let data = &variant["properties"]["data"];
    assert_eq!(data["contentMediaType"], "application/json", "{data}");
    data["contentSchema"]["$ref"]
        .as_str()
        .and_then(|r| r.rsplit('/').next())
        .expect("a schema for the data")
        .to_owned()
}
