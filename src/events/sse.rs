//! The `text/event-stream` wire format, serialized once per message for every subscriber.

use bytes::Bytes;

/// One event: `id`, `event` and a single-line JSON `data`.
pub fn event(id: i64, name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("id: {id}\nevent: {name}\ndata: {data}\n\n"))
}

/// Tells the browser how long to wait before reconnecting.
pub const RETRY: &[u8] = b"retry: 3000\n\n";

/// A comment line: keeps proxies from closing an idle stream, and finds dead clients.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
