//! The live stock stream as a client reads it: `Events` parses `text/event-stream` from a
//! drop's `/events` response.

use std::time::Duration;

use serde_json::Value;

use super::app::TestApp;

/// Reads `text/event-stream` events from a response, one at a time.
pub struct Events {
    res: reqwest::Response,
    buffer: String,
}

#[derive(Debug)]
pub struct Event {
    pub id: Option<i64>,
    pub name: String,
    pub data: Value,
}

impl Events {
    pub async fn open(app: &TestApp, drop: &str, last_event_id: Option<i64>) -> Events {
        let mut req = app.client.get(app.url(&format!("/v1/drops/{drop}/events")));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        Self::from(req).await
    }

    /// A buyer's own stream (`GET /v1/me/events`).
    pub async fn mine(app: &TestApp, sub: &str) -> Events {
        Self::from(
            app.client
                .get(app.url("/v1/me/events"))
                .bearer_auth(app.token(sub)),
        )
        .await
    }

    /// A drop's stream on any server (a spawned binary, a follower).
    pub async fn at(http: &reqwest::Client, base: &str, drop: &str) -> Events {
        Self::from(http.get(format!("{base}/v1/drops/{drop}/events"))).await
    }

    async fn from(req: reqwest::RequestBuilder) -> Events {
        let res = req.send().await.expect("sent");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Events {
            res,
            buffer: String::new(),
        }
    }

    /// The next event with data (comments and `retry:` are skipped); `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event {
                    id: None,
                    name: "message".into(),
                    data: Value::Null,
                };
                let mut has_data = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        event.id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event.name = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        event.data = serde_json::from_str(v).expect("data is json");
                        has_data = true;
                    }
                }
                if has_data {
                    return Some(event);
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.res.chunk())
                .await
                .expect("an event within 10 s")
                .expect("stream readable")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads stock events until `sku` shows `available`; returns how many stock events it took.
    pub async fn until_available(&mut self, sku: &str, available: i64) -> (usize, i64) {
        let mut count = 0;
        let mut last_id = 0;
        loop {
            let event = self.next().await.expect("stream open");
            let id = event.id.expect("every event has an id");
            assert!(id >= last_id, "ids never go back: {id} after {last_id}");
            last_id = id;
            if event.name == "stock" {
                count += 1;
                let shown = event.data["skus"]
                    .as_array()
                    .expect("skus")
                    .iter()
                    .find(|s| s["sku"] == sku)
                    .and_then(|s| s["available"].as_i64());
                if shown == Some(available) {
                    return (count, id);
                }
            }
        }
    }
}

/// The `data` of the first message of an event-stream response (the operator's feed).
pub async fn first_data(res: &mut reqwest::Response) -> Value {
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), res.chunk())
            .await
            .expect("a first message within 10 s")
            .expect("readable")
            .expect("a first message");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    serde_json::from_str(data).expect("data is json")
}
