//! Each buyer's own stream (`GET /v1/me/events`): the outbox events about their holds and
//! orders, pushed after the commit that made them. Looked up by buyer, so an event costs one
//! map lookup however many buyers are listening.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Streams one buyer may hold open (a few tabs).
const PER_BUYER: usize = 4;
/// Messages buffered per stream; a stream that falls this far behind loses the oldest news
/// and reads the hold itself (`GET /v1/holds/{hold}`).
const BUFFER: usize = 32;

#[derive(Default)]
pub struct BuyerStreams {
    streams: Mutex<HashMap<String, Vec<mpsc::Sender<Bytes>>>>,
    closed: std::sync::atomic::AtomicBool,
}

/// Why a buyer's stream was not opened.
#[derive(Debug, PartialEq, Eq)]
pub enum BuyerStreamError {
    TooMany,
    Closed,
}

impl BuyerStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<mpsc::Sender<Bytes>>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self, buyer: &str) -> Result<mpsc::Receiver<Bytes>, BuyerStreamError> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(BuyerStreamError::Closed);
        }
        let mut streams = self.lock();
        let open = streams.entry(buyer.to_owned()).or_default();
        open.retain(|tx| !tx.is_closed());
        if open.len() >= PER_BUYER {
            return Err(BuyerStreamError::TooMany);
        }
        let (tx, rx) = mpsc::channel(BUFFER);
        let _ = tx.try_send(Bytes::from_static(b"retry: 3000\n\n"));
        open.push(tx);
        Ok(rx)
    }

    /// Sends each (buyer, kind, data) to every stream of that buyer: one lock for a batch, and
    /// nothing built for buyers nobody is listening for.
    pub fn publish(&self, events: &[(&str, &str, &str)]) {
        let mut streams = self.lock();
        if streams.is_empty() {
            return;
        }
        for (buyer, kind, data) in events {
            let Some(open) = streams.get_mut(*buyer) else {
                continue;
            };
            let message = Bytes::from(format!("event: {kind}\ndata: {data}\n\n"));
            open.retain(|tx| !tx.is_closed());
            for tx in open.iter() {
                let _ = tx.try_send(message.clone());
            }
            if open.is_empty() {
                streams.remove(*buyer);
            }
        }
    }

    /// Ends every stream (the server is stopping).
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buyer_hears_only_their_own_news() {
        let streams = BuyerStreams::default();
        let mut mine = streams.subscribe("a").expect("open");
        let mut theirs = streams.subscribe("b").expect("open");
        streams.publish(&[("a", "order.created", "{}")]);
        assert_eq!(mine.try_recv().expect("retry"), "retry: 3000\n\n");
        assert_eq!(
            mine.try_recv().expect("news"),
            "event: order.created\ndata: {}\n\n"
        );
        assert_eq!(theirs.try_recv().expect("retry"), "retry: 3000\n\n");
        assert!(theirs.try_recv().is_err());
        for _ in 1..PER_BUYER {
            let _ = streams.subscribe("a").expect("open");
        }
        streams.close();
        assert!(mine.try_recv().is_err());
        assert_eq!(streams.subscribe("a").err(), Some(BuyerStreamError::Closed));
    }
}
