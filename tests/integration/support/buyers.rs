//! Many buyers against a spawned binary that a test kills or breaks under them: what the server
//! acknowledged before it went away, and the check that all of it survived the restart.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::api::{client, Api};
use super::db::{check_invariants, open_db};

/// What the server acknowledged before it died.
#[derive(Default)]
pub struct Acked {
    pub holds: Vec<(String, String)>,
    pub orders: Vec<(String, String)>,
}

impl Acked {
    /// The acknowledged hold and order ids that `ids` (a database's) lacks.
    pub fn missing_from<'a>(&'a self, ids: &HashSet<String>) -> Vec<&'a str> {
        self.holds
            .iter()
            .chain(&self.orders)
            .map(|(_, id)| id.as_str())
            .filter(|id| !ids.contains(*id))
            .collect()
    }
}

/// 64 buyers place holds (and confirm every other one) until `kill` says the server is gone.
/// Returns what was acknowledged with 2xx.
pub async fn stampede_until<F, Fut>(api: &Api, drop: &str, cycle: usize, kill: F) -> Acked
where
    F: FnOnce(Arc<Mutex<Acked>>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut buyers = Vec::new();
    for b in 0..64 {
        let (acked, stop) = (acked.clone(), stop.clone());
        let drop = drop.to_owned();
        let sub = format!("buyer-{b}");
        let buyer = api.buyer(&sub);
        buyers.push(tokio::spawn(async move {
            for i in 0..500 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let sent = buyer
                    .try_hold(&drop, "S1", 1, &format!("{cycle}-{sub}-{i}"))
                    .await;
                let Ok(res) = sent else { break };
                if res.status() != 201 {
                    continue;
                }
                let Ok(body) = res.json::<Value>().await else {
                    break;
                };
                let hold_id = body["hold_id"].as_str().expect("hold id").to_owned();
                acked
                    .lock()
                    .expect("lock")
                    .holds
                    .push((sub.clone(), hold_id.clone()));
                if i % 2 == 0 {
                    let key = format!("{cycle}-{sub}-{i}-confirm");
                    let sent = buyer.try_confirm(&hold_id, &key, "pi_crash").await;
                    let Ok(res) = sent else { break };
                    if res.status() == 201 {
                        if let Ok(order) = res.json::<Value>().await {
                            let id = order["order_id"].as_str().expect("order id").to_owned();
                            acked.lock().expect("lock").orders.push((sub.clone(), id));
                        }
                    }
                }
            }
        }));
    }
    kill(acked.clone()).await;
    stop.store(true, Ordering::Relaxed);
    for buyer in buyers {
        buyer.await.expect("buyer task");
    }
    let mut acked = acked.lock().expect("lock");
    std::mem::take(&mut *acked)
}

/// 16 buyers hold until the server goes away; returns the acknowledged holds and the status and
/// problem code of every other answer.
pub async fn hold_until_gone(base: &str, drop: &str) -> (Vec<(String, String)>, Vec<String>) {
    let api = Api::new(&client(), base);
    let mut buyers = Vec::new();
    for b in 0..16 {
        let drop = drop.to_owned();
        let sub = format!("tamper-{b}");
        let buyer = api.buyer(&sub);
        buyers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut refused = Vec::new();
            for i in 0..20_000 {
                let sent = buyer.try_hold(&drop, "S1", 1, &format!("{sub}-{i}")).await;
                let Ok(res) = sent else { break };
                let status = res.status();
                let Ok(body) = res.json::<Value>().await else {
                    break;
                };
                if status == 201 {
                    acked.push((
                        sub.clone(),
                        body["hold_id"].as_str().expect("id").to_owned(),
                    ));
                } else {
                    let code = body["code"].as_str().unwrap_or_default();
                    refused.push(format!("{} {code}", status.as_u16()));
                }
            }
            (acked, refused)
        }));
    }
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for buyer in buyers {
        let (a, r) = buyer.await.expect("buyer");
        acked.extend(a);
        refused.extend(r);
    }
    (acked, refused)
}

/// Every acknowledged hold and order is there after the restart (`api` is the restarted
/// server's), and the invariants hold in `dir`'s database.
pub async fn verify_survived(api: &Api, dir: &Path, acked: &Acked) {
    for (sub, id) in &acked.holds {
        let res = api.buyer(sub).get_hold(id).await;
        assert_eq!(
            res.status(),
            200,
            "acknowledged /v1/holds/{id} is missing after the crash"
        );
    }
    for (sub, id) in &acked.orders {
        let res = api.buyer(sub).get_order(id).await;
        assert_eq!(
            res.status(),
            200,
            "acknowledged /v1/orders/{id} is missing after the crash"
        );
    }
    let db = open_db(&dir.join("dropd.db"));
    check_invariants(&db).expect("invariants hold");
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    assert_eq!(integrity, "ok");
}
