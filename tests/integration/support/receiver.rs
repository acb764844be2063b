//! A real HTTP server on 127.0.0.1 that webhooks are delivered to: it answers as told (a status,
//! or not at all) and records every request it got.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// Never answers (until the client gives up).
    Hang,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub signature: String,
    pub event_id: String,
    pub event_type: String,
    pub body: String,
    pub at: Instant,
    /// It was answered 2xx.
    pub accepted: bool,
}

#[derive(Default)]
struct Script {
    first: VecDeque<Reply>,
    then: Option<Reply>,
    got: Vec<Received>,
}

pub struct Receiver {
    pub url: String,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Answers `first` in order, then `then` for ever.
    pub async fn start(first: Vec<Reply>, then: Reply) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bound");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let script = Arc::new(Mutex::new(Script {
            first: first.into(),
            then: Some(then),
            got: Vec::new(),
        }));
        let shared = script.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let script = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let script = script.clone();
                        async move { answer(script, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { url, script, task }
    }

    /// From now on, answer `reply` to everything.
    pub fn answer_from_now(&self, reply: Reply) {
        let mut script = self.script.lock().expect("lock");
        script.first.clear();
        script.then = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().expect("lock").got.clone()
    }

    /// Waits (at most `within`) until `n` requests were accepted; returns everything received.
    pub async fn until_accepted(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.iter().filter(|r| r.accepted).count() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{n} deliveries accepted within {within:?}; got {:?}",
                got.iter()
                    .map(|r| (&r.event_type, r.accepted))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    script: Arc<Mutex<Script>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (signature, event_id, event_type) = (
        header("dropd-signature"),
        header("dropd-event-id"),
        header("dropd-event-type"),
    );
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    let reply = {
        let mut script = script.lock().expect("lock");
        let reply = script
            .first
            .pop_front()
            .or(script.then)
            .unwrap_or(Reply::Status(200));
        script.got.push(Received {
            signature,
            event_id,
            event_type,
            body,
            at: Instant::now(),
            accepted: matches!(reply, Reply::Status(200..=299)),
        });
        reply
    };
    match reply {
        Reply::Status(code) => Ok(hyper::Response::builder()
            .status(code)
            .body(Full::new(Bytes::from_static(b"ok")))
            .unwrap_or_default()),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(hyper::Response::new(Full::new(Bytes::new())))
        }
    }
}

/// True if `signature` (`t=..,v1=..`) is the HMAC-SHA256 of `<t>.<body>` under `secret`.
pub fn signature_verifies(secret: &str, signature: &str, body: &str) -> bool {
    use hmac::{Hmac, Mac};
    let mut t = None;
    let mut v1 = None;
    for part in signature.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value),
            Some(("v1", value)) => v1 = Some(value),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let Ok(given) = hex::decode(v1) else {
        return false;
    };
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("a key");
    mac.update(format!("{t}.{body}").as_bytes());
    mac.verify_slice(&given).is_ok()
}
