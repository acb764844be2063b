//! The drop page in a real headless Chromium (Debian's `chromium` and `chromium-driver`, which
//! `make test` installs), driven over the W3C WebDriver protocol.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::support::app::spawn_app_with;
use crate::support::spec::live_drop;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (make test installs Debian's chromium-driver)");
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await;
            if let Ok(res) = ready {
                if res
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true)
                {
                    return driver;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not get ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn session(&self, profile: &std::path::Path) -> Session {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--no-first-run", "--disable-sync",
                         "--window-size=1000,800", format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let res: Value = self
            .http
            .post(format!("{}/session", self.base))
            .json(&caps)
            .send()
            .await
            .expect("session request sent")
            .json()
            .await
            .expect("session answer");
        let id = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"));
        Session {
            base: format!("{}/session/{id}", self.base),
            http: self.http.clone(),
        }
    }
}

struct Session {
    base: String,
    http: reqwest::Client,
}

impl Session {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res: Value = req
            .send()
            .await
            .expect("webdriver request")
            .json()
            .await
            .expect("webdriver json");
        res["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn find(&self, css: &str) -> Option<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT].as_str().map(str::to_owned)
    }

    async fn text(&self, css: &str) -> Option<String> {
        let element = self.find(css).await?;
        let text = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{element}/text"),
                None,
            )
            .await;
        text.as_str().map(str::to_owned)
    }

    /// Waits until the element's text satisfies `want`, polling; fails after 20 s.
    async fn wait_text(&self, css: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = None;
        loop {
            if let Some(text) = self.text(css).await {
                if want(&text) {
                    return text;
                }
                seen = Some(text);
            }
            if Instant::now() >= deadline {
                let source = self.call(reqwest::Method::GET, "/source", None).await;
                let loaded = self
                    .call(
                        reqwest::Method::POST,
                        "/execute/sync",
                        Some(json!({"script": "return performance.getEntriesByType('resource').map(e => e.name).join(' ')", "args": []})),
                    )
                    .await;
                panic!("{css} never showed the expected text (last {seen:?}); it loaded {loaded}; the page was:\n{source}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs `action` (`click`, `value`) to the element `css` names.
    async fn act(&self, css: &str, action: &str, body: Value) {
        let element = self
            .find(css)
            .await
            .unwrap_or_else(|| panic!("{css} is on the page"));
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/{action}"),
            Some(body),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        self.act(css, "click", json!({})).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.act(css, "value", json!({"text": text})).await;
    }

    /// Writes a PNG of the page under target/screenshots/.
    async fn save_screenshot(&self, name: &str) -> Vec<u8> {
        let png = self.screenshot().await;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(name), &png).expect("screenshot written");
        png
    }

    async fn screenshot(&self) -> Vec<u8> {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 screenshot"))
            .expect("valid base64")
    }

    async fn close(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_on_one_page_moves_the_stock_on_another_without_a_reload() {
    let app = spawn_app_with(|s| s.demo = true).await;
    let mut spec = live_drop("web", 5, 2);
    spec["name"] = json!("AJ1 Chicago");
    app.create_drop(&spec).await;
    let driver = Driver::start().await;
    let profiles = tempfile::tempdir().expect("temp dir");
    let first = driver.session(&profiles.path().join("a")).await;
    let second = driver.session(&profiles.path().join("b")).await;
    let url = format!("{}/#/drops/web", app.base);
    first.goto(&url).await;
    second.goto(&url).await;
    let available = r#".sku[data-sku="S1"] .available"#;
    first.wait_text(available, |t| t == "5").await;
    second.wait_text(available, |t| t == "5").await;
    // Rendered text: the badge is upper-cased by its style.
    let state = first.text("#drop-state").await.unwrap_or_default();
    assert_eq!(state.to_lowercase(), "live");

    first.click(r#".sku[data-sku="S1"] button.hold"#).await;
    first.wait_text("#message", |t| t.starts_with("Held")).await;
    // The second page learns it from the live stream.
    second.wait_text(available, |t| t == "4").await;

    let png = first.save_screenshot("drop-page.png").await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");

    // The hold is real: confirm it from the page and the order exists.
    first.click("#confirm").await;
    first.wait_text("#message", |t| t == "Bought!").await;
    let sold: i64 = app
        .db()
        .query_row("SELECT sold FROM skus WHERE drop_id = 'web'", [], |r| {
            r.get(0)
        })
        .expect("sku row");
    assert_eq!(sold, 1);
    first.close().await;
    second.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_page_shows_live_figures_and_pauses_a_drop() {
    let app = spawn_app_with(|_| {}).await;
    app.create_drop(&live_drop("ops-page", 5, 2)).await;
    let driver = Driver::start().await;
    let profiles = tempfile::tempdir().expect("temp dir");
    let page = driver.session(&profiles.path().join("admin")).await;
    page.goto(&format!("{}/admin", app.base)).await;
    page.type_into("#key-input", &app.admin_key).await;
    page.click("#key-form button").await;
    page.wait_text("#conn", |t| t == "live").await;
    page.wait_text(r#".drop[data-drop="ops-page"] .state"#, |t| {
        t.eq_ignore_ascii_case("live")
    })
    .await;

    page.click(r#".drop[data-drop="ops-page"] button[data-state="paused"]"#)
        .await;
    page.wait_text(r#".drop[data-drop="ops-page"] .state"#, |t| {
        t.eq_ignore_ascii_case("paused")
    })
    .await;
    let view = app.get_json("/v1/drops/ops-page").await;
    assert_eq!(view["state"], "paused");

    page.save_screenshot("operator-page.png").await;
    page.close().await;
    app.stop().await;
}
